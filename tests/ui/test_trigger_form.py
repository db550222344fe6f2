"""The Airflow 3.3 UI's trigger form on a pipeline DAG, driven by headless Chromium (Playwright, the Debian
``/usr/bin/chromium``: never ``playwright install``) against a real ``airflow standalone``
(scripts/standalone.py) on a temporary copy of dags_examples/ with a seeded local workspace.

What it proves: every pipeline parameter of income_retrain_v2 (the YAML ``params`` plus the factory's
``regenerate_outputs``) appears in the form with its description and its default; a value changed in the
form (epochs 40 -> 7) reaches the run's conf as an integer, and the run used it (the train script logged
``epochs=7`` and its last metric is at epoch 6, read from the run record in the workspace).

Real DOM of the form (Airflow 3.3.2, checked with page.content()): each param is a
``div[data-scope=field][data-part=root]`` with a ``label``, an input named ``element_<param>`` (a text input,
a Chakra number input (role=spinbutton) or a hidden checkbox behind a switch) and a
``[data-part=helper-text]`` with the description; the submit button is ``[data-testid=trigger-dag-submit]``.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import tempfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import seed_income  # noqa: E402
import standalone  # noqa: E402

from tests.conftest import scaled  # noqa: E402

pytestmark = pytest.mark.integration

DAG_ID = "income_retrain_v2"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
EXPECTED = {  # param -> (default shown in the form, description)
    "training_data": ("income_raw:latest", "Training data, a registered dataset (name, name:3, name:latest) or a "
                                          "path inside the workspace."),
    "learning_rate": ("0.5", "Gradient-descent step size."),
    "epochs": ("40", "Passes over the training data."),
    "l2": ("0.0001", "L2 regularisation strength (0 = none; 10 shrinks every weight to about zero)."),
    "regenerate_outputs": (False, "Recompute every step, ignoring results that could be reused."),
}


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory):
    if not pathlib.Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `sudo scripts/setup_system.sh` (apt-get install chromium)")
    home = tmp_path_factory.mktemp("ui-standalone")
    dags = home / "dags"
    shutil.copytree(REPO / "dags_examples", dags, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    # triggered runs only: with the weekly cron, unpausing would also start a scheduled run
    yaml_path = dags / "pipelines" / "income_retrain.yaml"
    text = yaml_path.read_text()
    assert text.count('  cron: "@weekly"\n') == 1
    yaml_path.write_text(text.replace('  cron: "@weekly"\n', ""))
    workspace = home / "workspace"
    workspace.mkdir()
    seed_income.seed(workspace.as_uri(), us_rows=3000, non_us_rows=200, score_rows=200)
    server = standalone.start(home, dags, workspace=workspace.as_uri(), timeout=scaled(240))
    try:
        yield {**server, "home": home, "workspace_uri": workspace.as_uri()}
    finally:
        standalone.stop(home)


def _field(page, param: str):
    return page.locator('div[data-scope="field"][data-part="root"]').filter(
        has=page.locator(f'[name="element_{param}"]'))


def test_trigger_form_lists_params_and_passes_a_changed_value(airflow_ui, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from airflow_mlpipe.client import AirflowClient
    from airflow_mlpipe.workspace.core import Workspace

    url = airflow_ui["url"]
    with AirflowClient(url, username=airflow_ui["username"], password=airflow_ui["password"]) as client:
        standalone.wait_for_dag(client, DAG_ID, timeout=scaled(180))
        client.set_paused(DAG_ID, False)
        before = {r["dag_run_id"] for r in client.dag_runs(DAG_ID)}

        # every expect() waits as long as the page's own actions (Playwright's 5 s default is shorter than
        # the trigger POST takes on a busy machine: the button stays disabled while the request is in flight)
        expect.set_options(timeout=scaled(30_000))
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path), executable_path=CHROMIUM,
                headless=True, args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000},
            )
            try:
                page = browser.new_page()
                page.set_default_timeout(scaled(30_000))
                page.goto(f"{url}/")
                page.fill("input[name=username]", airflow_ui["username"])
                page.fill("input[name=password]", airflow_ui["password"])
                page.keyboard.press("Enter")
                page.wait_for_url(lambda u: "login" not in u, timeout=scaled(30_000))
                page.goto(f"{url}/dags/{DAG_ID}")
                page.get_by_role("button", name="Trigger").first.click()
                submit = page.locator('[data-testid="trigger-dag-submit"]')
                expect(submit).to_be_visible()

                for param, (default, description) in EXPECTED.items():
                    field = _field(page, param)
                    expect(field).to_have_count(1)
                    expect(field.locator("label").first).to_contain_text(param)
                    expect(field.locator('[data-part="helper-text"]')).to_have_text(description)
                    element = field.locator(f'[name="element_{param}"]')
                    if isinstance(default, bool):
                        assert element.is_checked() is default, param
                    else:
                        expect(element).to_have_value(default)

                epochs = _field(page, "epochs").locator('[name="element_epochs"]')
                epochs.fill("7")
                epochs.press("Tab")
                expect(epochs).to_have_value("7")
                page.screenshot(path=str(tmp_path / "trigger-form.png"))
                (tmp_path / "trigger-form.html").write_text(page.content())
                expect(submit).to_be_enabled()
                submit.click()
                try:
                    expect(submit).to_be_hidden()
                except AssertionError:
                    # the dialog stayed open: say what it shows (a refusal or an error toast) before failing
                    page.screenshot(path=str(tmp_path / "submit-stayed.png"))
                    raise AssertionError("the trigger dialog stayed open after submit; it shows: "
                                         + " / ".join(page.locator('[role="dialog"]').all_inner_texts())[:2000]) from None
                expect(page.get_by_text("Dag run has been successfully triggered.").first).to_be_visible()
                page.screenshot(path=str(tmp_path / "after-submit.png"))
            finally:
                browser.close()

        deadline = time.monotonic() + scaled(60)
        new_runs: list[dict] = []
        while not new_runs and time.monotonic() < deadline:
            new_runs = [r for r in client.dag_runs(DAG_ID) if r["dag_run_id"] not in before]
            time.sleep(0.5)
        assert len(new_runs) == 1, new_runs
        run = new_runs[0]
        assert run["run_type"] == "manual"
        assert run["conf"]["epochs"] == 7 and isinstance(run["conf"]["epochs"], int), run["conf"]
        assert {k: run["conf"][k] for k in ("training_data", "learning_rate", "l2", "regenerate_outputs")} == {
            "training_data": "income_raw:latest", "learning_rate": 0.5, "l2": 0.0001, "regenerate_outputs": False,
        }
        finished = client.wait(DAG_ID, run["dag_run_id"], timeout=scaled(600), interval=1)
        assert finished["state"] == "success", {t["task_id"]: t["state"] for t in
                                                client.task_instances(DAG_ID, run["dag_run_id"])}

    record = Workspace.from_uri(airflow_ui["workspace_uri"]).runs.get_run(DAG_ID, run["dag_run_id"])
    assert record["params"]["epochs"] == 7
    train = record["steps"]["train"]
    assert train["params_logged"]["epochs"] == 7, train["params_logged"]
    assert train["metric_series"]["train_accuracy"][-1]["step"] == 6, train["metric_series"]
