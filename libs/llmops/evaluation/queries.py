"""The SQL `llmops eval` runs through the analytics SQL API, shown verbatim in
docs/evaluation-analytics.md (a test keeps the two identical).

They read only the analytics tables, so a tenant's key gets its own rows:
the SQL API adds `tenant = '<tenant>'` to every read, joins and subqueries
included. Parameters are ClickHouse query parameters; pass times as
`time_param(...)` makes them (UTC, millisecond text).
"""

from __future__ import annotations

import datetime as dt

# One row per tenant x label x arm of prompt {prompt} since {since}: requests and
# errors; online_scores / online_scored: per evaluator, the mean over scored requests
# (a request's own mean when scored twice) and how many; rated: requests with any
# feedback; thumbs_up / thumbs_down (each judge's latest judgement: argMax by given_at);
# thumbs_up_rate = up / (up + down); p95_ms over answered requests; cost from usage.
AB_ARMS_SQL = """\
-- per A/B arm of a prompt
SELECT i.tenant AS tenant, i.prompt_label AS label, i.prompt_arm AS arm,
       count() AS requests, countIf(i.status != 'OK') AS errors,
       avgMap(s.scores) AS online_scores, countMap(s.scores) AS online_scored,
       countIf(f.judgements > 0) AS rated, sum(f.up) AS thumbs_up, sum(f.down) AS thumbs_down,
       thumbs_up / nullIf(thumbs_up + thumbs_down, 0) AS thumbs_up_rate,
       quantileIf(0.95)(i.total_ms, i.status = 'OK') AS p95_ms,
       sum(u.cost) AS cost, cost / requests AS cost_per_request
FROM interactions AS i
LEFT JOIN
(
    SELECT tenant, request_id, avgMap(map(evaluator, toFloat64(score))) AS scores
    FROM evaluations
    WHERE kind = 'online' AND time >= {since:DateTime64(3, 'UTC')}
    GROUP BY tenant, request_id
) AS s ON s.tenant = i.tenant AND s.request_id = i.request_id
LEFT JOIN
(
    SELECT tenant, request_id, count() AS judgements,
           countIf(thumbs = 1) AS up, countIf(thumbs = -1) AS down
    FROM
    (
        SELECT tenant, event_id, any(request_id) AS request_id, argMax(thumbs, given_at) AS thumbs
        FROM feedback
        WHERE time >= {since:DateTime64(3, 'UTC')}
        GROUP BY tenant, event_id
    )
    GROUP BY tenant, request_id
) AS f ON f.tenant = i.tenant AND f.request_id = i.request_id
LEFT JOIN
(
    SELECT tenant, request_id, sum(cost) AS cost
    FROM usage
    WHERE time >= {since:DateTime64(3, 'UTC')}
    GROUP BY tenant, request_id
) AS u ON u.tenant = i.tenant AND u.request_id = i.request_id
WHERE i.prompt = {prompt:String} AND i.prompt_arm != ''
  AND i.time >= {since:DateTime64(3, 'UTC')}
GROUP BY tenant, label, arm
ORDER BY tenant, label, length(arm), arm"""

# The samples behind AB_ARMS_SQL's online_scores, for rank tests and the bootstrap:
# per tenant x label x arm, evaluator -> each scored request's score.
AB_SCORES_SQL = """\
-- A/B online scores
SELECT i.tenant AS tenant, i.prompt_label AS label, i.prompt_arm AS arm,
       groupArrayMap(s.scores) AS scores
FROM interactions AS i
INNER JOIN
(
    SELECT tenant, request_id, avgMap(map(evaluator, toFloat64(score))) AS scores
    FROM evaluations
    WHERE kind = 'online' AND time >= {since:DateTime64(3, 'UTC')}
    GROUP BY tenant, request_id
) AS s ON s.tenant = i.tenant AND s.request_id = i.request_id
WHERE i.prompt = {prompt:String} AND i.prompt_arm != ''
  AND i.time >= {since:DateTime64(3, 'UTC')}
GROUP BY tenant, label, arm
ORDER BY tenant, label, length(arm), arm"""

# One row per item and evaluator of run {run_id} (the latest score if one was stored twice).
RUN_ITEMS_SQL = """\
-- items of a run
SELECT item_id, evaluator, latest.1 AS score, latest.2 AS passed, latest.3 AS reason
FROM
(
    SELECT item_id, evaluator, argMax((score, passed, reason), time) AS latest
    FROM evaluations
    WHERE run_id = {run_id:String}
      AND time >= (SELECT min(time) FROM eval_runs WHERE event_id = {run_id:String})
    GROUP BY item_id, evaluator
)
ORDER BY item_id, evaluator"""

# A run's start and end share its id; the end (the larger finished_at) is the one to
# read, picked here rather than by FINAL, which keeps whichever row came last.
_LATEST_RUNS = """\
SELECT *
FROM
(
    SELECT event_id AS run_id, tenant, time AS started_at, finished_at, status, dataset,
           dataset_version, prompt, prompt_version, model, items, failed_items, summary,
           judge_input_tokens, judge_output_tokens, judge_cost, currency, reason, settings,
           concurrency, evaluations, key_id
    FROM eval_runs
    WHERE {where}
    ORDER BY finished_at DESC
    LIMIT 1 BY tenant, run_id
)
ORDER BY started_at DESC, run_id"""

# Run {run_id}, as it ended (or as it runs).
RUN_SQL = "-- one run\n" + _LATEST_RUNS.format(where="event_id = {run_id:String}")

# Runs started since {since}, newest first.
RUNS_SQL = "-- recent runs\n" + _LATEST_RUNS.format(where="time >= {since:DateTime64(3, 'UTC')}")

# Drift checks since {since}, newest first (drifted or not).
DRIFT_SQL = """\
-- recent drift events
SELECT time, tenant, signal, method, statistic, p_value, threshold, drifted,
       reference_start, reference_end, recent_start, recent_end, n_reference, n_recent
FROM drift_events
WHERE time >= {since:DateTime64(3, 'UTC')}
ORDER BY time DESC, tenant, signal"""


def time_param(when: dt.datetime) -> str:
    """A `DateTime64(3, 'UTC')` query parameter: ClickHouse parses no ISO 8601 'T' or zone."""
    if when.tzinfo is None:
        raise ValueError("an aware datetime, please: a naive one has no defined instant")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
