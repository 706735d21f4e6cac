"""Two Kafka clusters (`output.kafka.brokers`): zeek-raw and the normalizer-enricher's group on the input cluster,
zeek-normalized, zeek-dlq, the status topic and the parquet-writer's group on the output cluster.

At-least-once runs end to end across them: the normalizer consumes on A, produces to B and commits on A; the
writer consumes on B; the health service reads the status on B and each group's lag on its own cluster.
Exactly-once with a distinct output cluster is refused at start (a Kafka transaction cannot span two clusters).
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from confluent_kafka.admin import AdminClient

from tests.infra import topics
from tests.infra.kafka import KafkaBroker
from tests.infra.service_process import CONFIG, ZEEK, clean_env
from tests.infra.waiting import wait_for
from tests.infra.zeek_data import json_logs, read_lines
from tests.integration.test_health_kafka import commit, free_port, health_service
from tests.integration.test_normalizer_support import STATUS_CONFIG, Pipeline
from tests.integration.test_normalizer_support import running as normalizer_running
from tests.integration.test_writer_support import Lake, assert_exactly_once, last_data_offsets, running
from zeek_pipeline.health.lag import GroupSpec, LagMonitor

pytestmark = pytest.mark.integration

SMALL_LOG = 5000  # every real log file up to this many records: most log types, about 15k records in all
REFUSAL = "a Kafka transaction cannot span two clusters"


@pytest.fixture(scope="module")
def output_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second real broker: the output cluster."""
    broker = KafkaBroker(workdir=tmp_path_factory.mktemp("kafka-output"), heap="512m")
    try:
        broker.start()
        yield broker.bootstrap
    finally:
        broker.stop()


def small_logs() -> tuple[list[Path], int]:
    files, total = [], 0
    for path in json_logs():
        count = sum(1 for _ in read_lines(path))
        if count <= SMALL_LOG:
            files.append(path)
            total += count
    return files, total


def nonempty(offsets: dict[int, Any], ends: dict[int, int]) -> dict[int, Any]:
    """`offsets` of the partitions that hold records (an empty one has no committed offset to compare)."""
    return {p: offsets.get(p) for p, end in ends.items() if end > 0}


def group_lag(lag: dict[str, Any], group: str) -> dict[str, Any]:
    return next(g for g in lag["groups"] if g["group"] == group)


def test_at_least_once_across_two_clusters_writes_every_record_once_and_commits_each_group_on_its_cluster(
        kafka_bootstrap: str, output_bootstrap: str, tmp_path: Path) -> None:
    files, total = small_logs()
    # zeek-raw on the input cluster; zeek-normalized, zeek-dlq and the status topic on the output cluster only
    pipe = Pipeline(kafka_bootstrap, tmp_path, input_partitions=3, name="oc")
    pipe.input = topics.create_topic(kafka_bootstrap, topics.unique_name("oc-raw"), 3)
    pipe.output = topics.create_topic(output_bootstrap, topics.unique_name("oc-norm"), 3)
    pipe.dlq = topics.create_topic(output_bootstrap, topics.unique_name("oc-dlq"), 1)
    pipe.status = topics.create_topic(output_bootstrap, topics.unique_name("oc-status"), 1, STATUS_CONFIG)
    pipe.group = topics.unique_name("oc-normalizer")
    lake = Lake(output_bootstrap, tmp_path, str(tmp_path / "lake"), topic=pipe.output, dlq=pipe.dlq,
                status=pipe.status, group=topics.unique_name("oc-writer"))
    clusters = {"ZEEK_PIPELINE_KAFKA__BROKERS": kafka_bootstrap,
                "ZEEK_PIPELINE_OUTPUT__KAFKA__BROKERS": output_bootstrap,
                "ZEEK_PIPELINE_NORMALIZER__PROCESSING_GUARANTEE": "at_least_once"}
    health_env = {**clusters, "ZEEK_PIPELINE_KAFKA__TOPIC": pipe.input, "ZEEK_PIPELINE_KAFKA__GROUP_ID": pipe.group,
                  "ZEEK_PIPELINE_WRITER__TOPIC": lake.topic, "ZEEK_PIPELINE_WRITER__GROUP_ID": lake.group,
                  "ZEEK_PIPELINE_STATUS__TOPIC": pipe.status, "ZEEK_PIPELINE_HEALTH__REFRESH_SECONDS": "1",
                  "ZEEK_PIPELINE_LOG__PATH": str(tmp_path / "log")}

    with normalizer_running(pipe), running(lake), health_service(health_env, tmp_path) as health:
        pipe.publish(files)
        assert sum(topics.end_offsets(kafka_bootstrap, pipe.input).values()) == total
        normalizer = pipe.start(**clusters)
        writer = lake.start(**clusters, ZEEK_PIPELINE_WRITE__FLUSH_INTERVAL_SECONDS="2")
        ends = topics.end_offsets(kafka_bootstrap, pipe.input)

        def input_committed() -> bool:  # the normalizer's group, on the input cluster (an empty partition: none)
            assert normalizer.process.poll() is None, normalizer.tail()
            committed = pipe.committed()
            return all(committed.get(p) == end for p, end in ends.items() if end > 0)

        wait_for("the normalizer to commit every input offset on the input cluster", input_committed, timeout=240)
        last = last_data_offsets(output_bootstrap, pipe.output, total)
        lake.wait_written(last, timeout=240, alive=writer)

        # health: both components' status from the output cluster, each group's lag from its own cluster
        def caught_up() -> dict[str, Any] | None:
            lag: dict[str, Any] = health.json("/api/v1/lag")
            done = lag["reachable"] and all(
                g["error"] is None and g["topics"] and all(t["error"] is None and t["lag"] == 0 for t in g["topics"])
                for g in lag["groups"])
            return lag if done else None

        lag = wait_for("health to show both groups caught up", caught_up, timeout=120)
        normalizer_view = group_lag(lag, pipe.group)
        assert [t["topic"] for t in normalizer_view["topics"]] == [pipe.input]
        shown = {p["partition"]: p["committed"] for p in normalizer_view["topics"][0]["partitions"]}
        assert nonempty(shown, ends) == nonempty(ends, ends)
        writer_view = group_lag(lag, lake.group)
        assert [t["topic"] for t in writer_view["topics"]] == [pipe.output]
        assert sum(p["high_watermark"] for p in writer_view["topics"][0]["partitions"]) == total
        def both_listed() -> dict[str, Any] | None:
            body: dict[str, Any] = health.json("/api/v1/pipeline")
            listed = {c["component"] for c in body["components"]}
            return body if listed >= {"normalizer-enricher", "parquet-writer"} else None

        pipeline = wait_for("health to list both services", both_listed, timeout=60)
        assert pipeline["kafka"]["reachable"] is True
        assert kafka_bootstrap in pipeline["kafka"]["bootstrap"] and output_bootstrap in pipeline["kafka"]["bootstrap"]
        assert pipeline["status_channel"]["reachable"] is True

        assert writer.terminate() == 0, writer.tail()
        assert normalizer.terminate() == 0, normalizer.tail()

    # the normalizer's group lives on the input cluster only, the writer's on the output cluster only
    assert nonempty(topics.committed_offsets(kafka_bootstrap, pipe.group, pipe.input), ends) == nonempty(ends, ends)
    writer_ends = topics.end_offsets(output_bootstrap, pipe.output)
    assert nonempty(topics.committed_offsets(output_bootstrap, lake.group, pipe.output), writer_ends) == \
        nonempty(writer_ends, writer_ends)
    on_input = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert pipe.output not in on_input and pipe.status not in on_input

    # every record once in zeek-normalized (no fault: exactly once, though the guarantee is at-least-once) ...
    normalized = topics.consume_all(output_bootstrap, pipe.output, expected=total, timeout=120)
    sources = Counter((r.headers["source.partition"], r.headers["source.offset"]) for r in normalized)
    assert len(sources) == total and max(sources.values()) == 1
    assert topics.consume_all(output_bootstrap, pipe.dlq, timeout=10, idle=2) == []
    # ... and once in Parquet, read back by DuckDB with its types
    assert_exactly_once(lake, {(r.partition, r.offset) for r in normalized})
    rel = f"read_parquet('{lake.base}/**/*.parquet', hive_partitioning=true, union_by_name=true)"
    counted = duckdb.execute(f"select count(*), count(distinct (_kafka_partition, _kafka_offset)) from {rel}")
    assert counted.fetchall() == [(total, total)]
    schema = lake.dataset().schema
    assert schema.field("event_time").type == pa.timestamp("us", tz="UTC")


def test_lag_monitor_reads_each_group_on_its_cluster_and_keeps_one_cluster_figures_when_the_other_is_down(
        kafka_bootstrap: str, output_bootstrap: str) -> None:
    raw = topics.create_topic(kafka_bootstrap, topics.unique_name("lm-raw"), 2)
    normalized = topics.create_topic(output_bootstrap, topics.unique_name("lm-norm"), 2)
    lines = [line for path in small_logs()[0] for line in read_lines(path)][:900]
    topics.produce(kafka_bootstrap, raw, lines, partition=0)
    topics.produce(output_bootstrap, normalized, lines[:300], partition=1)
    n_group, w_group = topics.unique_name("lm-n"), topics.unique_name("lm-w")
    commit(kafka_bootstrap, n_group, {(raw, 0): 100})
    commit(output_bootstrap, w_group, {(normalized, 1): 50})
    specs = [GroupSpec(n_group, raw, "normalizer-enricher", kafka_bootstrap),
             GroupSpec(w_group, normalized, "parquet-writer", output_bootstrap)]
    both = LagMonitor({"bootstrap.servers": output_bootstrap}, specs, timeout=5.0)
    snap = both.refresh()
    both.close()
    assert snap.kafka.reachable and snap.kafka.brokers == 2 and snap.lag.error is None
    assert snap.kafka.bootstrap == f"{kafka_bootstrap}; {output_bootstrap}"
    n_view, w_view = snap.lag.groups
    assert (n_view.group, n_view.error, n_view.topics[0].lag) == (n_group, None, 800)
    assert (w_view.group, w_view.error, w_view.topics[0].lag) == (w_group, None, 250)

    # the output cluster unreachable: its group keeps its last figure, the input cluster's stays current
    dead = f"127.0.0.1:{free_port()}"
    specs[1] = GroupSpec(w_group, normalized, "parquet-writer", dead)
    monitor = LagMonitor({"bootstrap.servers": kafka_bootstrap}, specs, timeout=1.0)
    down = monitor.refresh()
    monitor.close()
    assert not down.kafka.reachable and down.kafka.error is not None
    assert down.kafka.error.startswith(f"{dead}: Kafka unreachable: ")
    assert [g.topics[0].lag if g.topics else None for g in down.lag.groups] == [800, None]
    assert down.lag.groups[1].error == "not read yet"


def run_zeek(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ZEEK), *args], env=clean_env(env), capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.parametrize("command", [["validate-config", "--config", str(CONFIG)],
                                     ["normalizer-enricher", "--config", str(CONFIG)]])
def test_exactly_once_with_a_distinct_output_cluster_is_refused_at_start_saying_why(
        command: list[str], kafka_bootstrap: str, output_bootstrap: str, tmp_path: Path) -> None:
    env = {"ZEEK_PIPELINE_KAFKA__BROKERS": kafka_bootstrap, "ZEEK_PIPELINE_OUTPUT__KAFKA__BROKERS": output_bootstrap,
           "ZEEK_PIPELINE_LOG__PATH": str(tmp_path / "log")}
    refused = run_zeek(command, env)
    assert refused.returncode in (1, 2), refused
    assert REFUSAL in refused.stderr and "at_least_once" in refused.stderr, refused.stderr
    assert "output.kafka.brokers" in refused.stderr

    # the same clusters with at-least-once, or one cluster named twice, pass the check
    accepted = run_zeek(["validate-config", "--config", str(CONFIG)],
                        {**env, "ZEEK_PIPELINE_NORMALIZER__PROCESSING_GUARANTEE": "at_least_once"})
    assert accepted.returncode == 0, accepted.stderr
    same = run_zeek(["validate-config", "--config", str(CONFIG)],
                    {**env, "ZEEK_PIPELINE_OUTPUT__KAFKA__BROKERS": kafka_bootstrap})
    assert same.returncode == 0, same.stderr
