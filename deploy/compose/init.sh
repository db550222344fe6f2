#!/usr/bin/env bash
# One-shot init of the distributed shape: migrate the metadata DB, write the admin password, create the
# MinIO bucket of the workspace and the `mlpipe_default` connection pointing at it.
set -euo pipefail
airflow db migrate
printf '{"admin": "%s"}\n' "${AIRFLOW_ADMIN_PASSWORD}" > /opt/airflow/config/passwords.json
chown -R 50000:0 /opt/airflow/config
python - <<'PY'
import os, boto3
s3 = boto3.client("s3", endpoint_url="http://minio:9000",
                  aws_access_key_id=os.environ["MINIO_ROOT_USER"],
                  aws_secret_access_key=os.environ["MINIO_ROOT_PASSWORD"])
if "mlpipe" not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket="mlpipe")
print("bucket mlpipe ready")
PY
airflow connections delete mlpipe_default >/dev/null 2>&1 || true
airflow connections add mlpipe_default --conn-type mlpipe \
  --conn-login "${MINIO_ROOT_USER}" --conn-password "${MINIO_ROOT_PASSWORD}" \
  --conn-extra '{"workspace": "s3://mlpipe/workspace", "endpoint_url": "http://minio:9000"}'
echo "airflow-mlpipe init done"
