#!/usr/bin/env bash
# `make demo`: local Kafka, one worker with alert rules (demo.rules.yml), the dashboard
# (`inferwatch ui`), a minute of simulated traffic with two incidents, then per-model
# counts, sample SQL and the alerts the spike raised. In a terminal it then waits for
# Enter so the dashboard can be explored; otherwise (CI, a pipe) it exits at once.
# Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
iw=.venv/bin/inferwatch
home=${INFERWATCH_HOME:-.inferwatch}
mkdir -p "$home"
worker_pid=""
ui_pid=""
ui_port=${INFERWATCH_UI_PORT:-8088}
started_kafka=no
# Each run gets its own topics and consumer group: the trace replay below stamps events up
# to minutes ahead of the clock, so a second run on the same topics would find every
# window already closed (its events counted as too late).
run_id=demo-$(date +%s)
export INFERWATCH_WORKER__APP_ID=$run_id
for topic in events dlq resources partials metrics scores alerts silences baselines \
             feedback joins outcomes; do
  export "INFERWATCH_TOPICS__${topic^^}=$run_id.$topic"
done
# OpenTelemetry GenAI spans, as an OTel Collector's Kafka exporter writes them (docs/otlp.md)
export INFERWATCH_OTLP__ENABLED=true
export INFERWATCH_OTLP__TOPICS="$run_id.otlp_spans=otlp_proto"
# Alert rules: the example's latency and error-rate rules scaled to a one-minute run
# (deploy/local/demo.rules.yml says why), so the spike and the burst fire and resolve.
export INFERWATCH_ALERTS__RULES=${INFERWATCH_ALERTS__RULES:-deploy/local/demo.rules.yml}
# Model quality (docs/quality.md): 10 s quality windows for a one-minute run (default 5 min)
export INFERWATCH_QUALITY__WINDOW_SECONDS=10
export INFERWATCH_QUALITY__MIN_CALIBRATION_LABELS=50

cleanup() {
  if [ -n "$ui_pid" ] && kill -0 "$ui_pid" 2>/dev/null; then
    echo "== stopping dashboard"
    kill -TERM "$ui_pid"; wait "$ui_pid" 2>/dev/null || true
  fi
  if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
    echo "== stopping worker"
    kill -TERM "$worker_pid"; wait "$worker_pid" 2>/dev/null || true
  fi
  if [ "$started_kafka" = yes ]; then echo "== stopping kafka"; $iw dev down; fi
}
trap cleanup EXIT

if ! $iw dev status >/dev/null 2>&1 && [ -z "${INFERWATCH_KAFKA:-}" ]; then started_kafka=yes; fi
echo "== starting kafka (KRaft, jars from Maven Central on first run)"
$iw dev up

echo "== starting worker (process + sink roles, embedded ClickHouse); log: $home/demo-worker.log"
# a minute of traffic is 6 windows: drift is measured against the previous 2 (default 12)
INFERWATCH_DRIFT__TRAILING_WINDOWS=2 $iw worker --loglevel warn > "$home/demo-worker.log" 2>&1 &
worker_pid=$!
for _ in $(seq 1 60); do
  if [ -f "$home/clickhouse.owner.json" ]; then break; fi
  if ! kill -0 "$worker_pid" 2>/dev/null; then cat "$home/demo-worker.log"; exit 1; fi
  sleep 1
done

echo "== starting the dashboard (inferwatch ui); log: $home/demo-ui.log"
$iw ui --port "$ui_port" > "$home/demo-ui.log" 2>&1 &
ui_pid=$!
for _ in $(seq 1 30); do
  if grep -q "dashboard on" "$home/demo-ui.log"; then break; fi
  if ! kill -0 "$ui_pid" 2>/dev/null; then cat "$home/demo-ui.log"; exit 1; fi
  sleep 0.5
done
ui_password=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["password"])' \
  "$home/clickhouse.owner.json")
echo "   dashboard: http://127.0.0.1:$ui_port/  user inferwatch, password $ui_password"
echo "   (the worker's random query password, from $home/clickhouse.owner.json; new each start)"

run_start=$(date +%s)
echo "== simulating 60 s of traffic: latency spike on gpt-chat at 20 s, error burst on code-complete at 35 s,"
echo "   intent-clf 20 points less accurate from 30 s; labels for half its predictions 5 s later, thumbs on 20 %"
$iw simulate --rate 300 --duration 60 --speed 1 \
  --incident "latency_spike@20+15:model=gpt-chat" \
  --incident "error_burst@35+10:model=code-complete" \
  --feedback --label-delay fixed:5s --label-rate 0.5 --satisfaction-rate 0.2 \
  --feedback-horizon 10 \
  --incident "accuracy_drop@30+30:model=intent-clf:factor=20"
echo "== replaying 2,000 requests of the Azure LLM conversation trace (CC BY 4.0), 50x speed"
$iw simulate --replay data/azure_llm_inference_conv_2023.csv --limit 2000 --speed 50

echo "== sending 10 s of traffic as OpenTelemetry GenAI spans (otlp_proto), as a Collector would"
$iw simulate --otlp otlp_proto --rate 20 --duration 10 --speed 0 --seed 11

echo "== waiting for the sink to catch up"
sleep 3
since="timestamp >= toDateTime64($run_start - 5, 3)"

echo; echo "== events per model (this run)"
$iw query "SELECT model, model_version, count() AS events FROM events FINAL
           WHERE $since GROUP BY model, model_version ORDER BY events DESC"

echo; echo "== latency percentiles and error rate per model"
$iw query "SELECT model,
                  round(quantile(0.5)(latency_ms)) AS p50_ms,
                  round(quantile(0.99)(latency_ms)) AS p99_ms,
                  round(avg(status = 'error') * 100, 2) AS error_pct,
                  round(sum(cost_usd), 4) AS cost_usd
           FROM events FINAL WHERE $since GROUP BY model ORDER BY model"

echo; echo "== the latency spike as the stream computed it: gpt-chat 10 s windows (window_metrics)"
$iw query "SELECT window_start, model_version, requests, round(latency_p50_ms) AS p50_ms,
                  round(latency_p99_ms) AS p99_ms, round(ttft_p99_ms) AS ttft_p99_ms,
                  round(error_rate * 100, 1) AS error_pct, version
           FROM window_metrics FINAL
           WHERE window_start >= toDateTime64($run_start - 5, 3) AND model = 'gpt-chat'
           ORDER BY window_start, model_version LIMIT 16"

echo; echo "== the spike as drift of gpt-chat's latency distribution against its previous 2 windows (drift_scores)"
$iw query "SELECT window_start, labels['model_version'] AS version, statistic,
                  round(value, 3) AS value, round(threshold, 3) AS threshold, drifted
           FROM drift_scores FINAL
           WHERE window_start >= toDateTime64($run_start - 5, 3) AND name = 'latency_ms'
             AND labels['model'] = 'gpt-chat' AND labels['model_version'] = '2024-06'
             AND statistic IN ('ks', 'wasserstein')
           ORDER BY window_start, statistic LIMIT 12"

echo; echo "== errors by type"
$iw query "SELECT model, error_type, count() AS errors FROM events FINAL
           WHERE $since AND status = 'error' GROUP BY model, error_type ORDER BY errors DESC LIMIT 8"

echo; echo "== OTel GenAI spans that became events (event_id = trace id + span id)"
$iw query "SELECT service, model, operation, count() AS spans, round(avg(latency_ms)) AS avg_ms,
                  sum(input_tokens) AS input_tokens, any(trace_id) AS a_trace_id
           FROM events FINAL WHERE $since AND event_id = concat(trace_id, span_id)
           GROUP BY service, model, operation ORDER BY spans DESC LIMIT 6"

# --- cost: given by the producer, or computed from the price table (docs/pricing.md) ---
echo; echo "== cost per model and its source: code-complete sends no cost_usd, so the pipeline"
echo "   prices it from the shipped price table (cost_source = computed)"
$iw query "SELECT model, cost_source, count() AS events, round(sum(cost_usd), 4) AS cost_usd
           FROM events FINAL WHERE $since GROUP BY model, cost_source ORDER BY model, cost_source"
# --- end of the cost block ---

echo; echo "== model quality from delayed labels: intent-clf per 10 s window by inference time (quality_windows)"
echo "   the accuracy drop from 30 s, and the estimate from confidences beside it"
$iw query "SELECT window_start, inferences, labelled, round(label_coverage, 2) AS coverage,
                  round(accuracy, 3) AS accuracy, round(estimated_accuracy, 3) AS estimated,
                  round(f1_macro, 3) AS f1_macro, round(ece, 3) AS ece, version
           FROM quality_windows FINAL
           WHERE window_start >= toDateTime64($run_start - 5, 3) AND model = 'intent-clf'
             AND basis = 'inference_time' AND inferences > 0
           ORDER BY window_start LIMIT 10"

echo; echo "== satisfaction per model version, and what became of every feedback (feedback)"
$iw query "SELECT model, model_version, sum(satisfaction_count) AS rated,
                  round(sum(satisfaction_mean * satisfaction_count) / sum(satisfaction_count), 3)
                    AS satisfaction,
                  round(sum(thumbs_down_rate * satisfaction_count) / sum(satisfaction_count), 3)
                    AS thumbs_down
           FROM quality_windows FINAL
           WHERE window_start >= toDateTime64($run_start - 5, 3) AND basis = 'feedback_time'
             AND satisfaction_count > 0
           GROUP BY model, model_version ORDER BY model, model_version"
$iw query "SELECT kind, status, count() AS feedback FROM feedback FINAL
           WHERE timestamp >= toDateTime64($run_start - 5, 3)
           GROUP BY kind, status ORDER BY kind, status"

echo; echo "== the gpt-chat canary beside the version serving most traffic (exit code 3: worse)"
$iw quality compare --model gpt-chat --baseline 2024-06 --candidate 2024-09 \
  --since "$((run_start - 5))" || [ $? -eq 3 ]

echo; echo "== alerts of this run (deploy/local/demo.rules.yml): firing and resolved transitions"
$iw query "SELECT window_end, rule, state, severity, series_key, round(value, 2) AS value,
                  round(threshold, 2) AS threshold
           FROM alerts FINAL WHERE recorded_at >= toDateTime64($run_start, 3) AND NOT repeat
           ORDER BY window_end, rule LIMIT 20"

echo; echo "demo done: try  $iw query \"SELECT ...\""
echo "tables: events, resources, window_metrics, resource_metrics, rollup_1m, rollup_1h,"
echo "        drift_scores, anomaly_scores, alerts, quality_windows, feedback"

if [ -t 0 ]; then
  echo
  echo "The stack keeps running: open http://127.0.0.1:$ui_port/ (user inferwatch, password"
  echo "$ui_password) for the Overview, a series' charts and drift heat map, and the alerts."
  read -r -p "Press Enter to stop everything… " _
fi
