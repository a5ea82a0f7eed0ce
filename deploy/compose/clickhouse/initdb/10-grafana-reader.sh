#!/bin/bash
# Runs once, when the clickhouse-data volume is empty (the image's docker-entrypoint-initdb.d):
# Grafana's user, read-only, with SELECT on the InferWatch database and nothing else.
# CLICKHOUSE_GRAFANA_PASSWORD comes from .env through compose.yaml.
set -euo pipefail
: "${CLICKHOUSE_GRAFANA_PASSWORD:?CLICKHOUSE_GRAFANA_PASSWORD is not set}"
# a SQL string literal: backslashes and single quotes escaped
password=${CLICKHOUSE_GRAFANA_PASSWORD//\\/\\\\}
password=${password//\'/\\\'}
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY '${password}'
    SETTINGS readonly = 2;
GRANT SELECT ON inferwatch.* TO grafana;
SQL
