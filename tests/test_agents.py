"""Agent DAG workloads (workload/agents.py, agent_apps.py, agent_workloads.py, tool_time.py).

- The embedded CodeWriter table equals ../shared/traces/tokencake_dag/ (skipped where absent) and has
  the published shape: 29 nodes / 36 edges as a plain graph, 27 LLM calls, longest path 16 nodes, 6,464
  output tokens, 18 tool calls totalling 66.9 s (workloads.md §2(a)).
- Invariants on every preset and on random DAGs over many seeds: acyclic; the critical path is a path,
  its length is the longest root-to-sink time (checked against networkx's edge-weighted longest path),
  slack >= 0 everywhere and 0 on it.
- Instances: the request table validates; prompts are append-only (a successor's prompt hashes start with
  its parent's full prompt+output blocks; a join holds every predecessor's output once); no sharing across
  apps; Poisson arrivals at the rate; tool draws follow their distributions; errors name what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload import agents
from tokenstack_sim.workload.agent_apps import instantiate, sequence_hashes
from tokenstack_sim.workload.source import load_workload
from tokenstack_sim.workload.table import validate
from tokenstack_sim.workload.tool_time import LogNormal, measured_mixture

pytestmark = pytest.mark.unit

CSV = Path(__file__).resolve().parents[2] / "shared" / "traces" / "tokencake_dag" / "tokencake_codewriter_dag.csv"


def _plain_graph(rows) -> nx.DiGraph:
    g = nx.DiGraph()
    for node, _kind, preds, *_ in rows:
        g.add_node(node)
        for p in preds.split():
            g.add_edge(p, node)
    return g


def test_codewriter_shape():
    rows = agents.CODEWRITER_ROWS
    g = _plain_graph(rows)
    assert g.number_of_nodes() == 29 and g.number_of_edges() == 36
    assert sum(1 for r in rows if r[1] == "llm") == 27
    assert len(nx.dag_longest_path(g)) == 16
    assert sum(r[3] for r in rows) == 6464
    tools = [r for r in rows if r[4]]
    assert len(tools) == 18 and sum(r[5] for r in tools) == pytest.approx(66.9)
    t = agents.codewriter()
    assert sum(1 for _, a in t.nodes(data=True) if a["kind"] == agents.LLM) == 27
    assert sum(1 for _, a in t.nodes(data=True) if a["kind"] == agents.TOOL) == 18 + 2  # + start, collect


@pytest.mark.skipif(not CSV.is_file(), reason="../shared/traces/tokencake_dag not present")
def test_codewriter_matches_csv():
    g_csv = agents.read_dag_csv(CSV)
    g_emb = agents.codewriter()
    assert nx.utils.graphs_equal(nx.DiGraph(g_csv.edges), nx.DiGraph(g_emb.edges))
    for v, a in g_emb.nodes(data=True):
        b = g_csv.nodes[v]
        assert a["kind"] == b["kind"]
        if a["kind"] == agents.LLM:
            assert a["output_tokens"] == b["output_tokens"] and a["importance"] == b["importance"]
        else:
            assert a["estimate_s"] == b["estimate_s"]


def _check_critical_path(g):
    assert nx.is_directed_acyclic_graph(g)
    cp = agents.critical_path(g)
    w = {v: agents.node_weight_s(a) for v, a in g.nodes(data=True)}
    # the path is a path of g from a root to a sink
    assert g.in_degree(cp.path[0]) == 0 and g.out_degree(cp.path[-1]) == 0
    assert all(g.has_edge(a, b) for a, b in zip(cp.path, cp.path[1:]))
    assert sum(w[v] for v in cp.path) == pytest.approx(cp.length_s)
    # longest by networkx on an edge-weighted copy (a source node carries each node's weight on its out-edges)
    h = nx.DiGraph()
    for a, b in g.edges:
        h.add_edge(a, b, weight=w[a])
    for v in g.nodes:
        if g.out_degree(v) == 0:
            h.add_edge(v, "__sink__", weight=w[v])
    assert nx.dag_longest_path_length(h) == pytest.approx(cp.length_s)
    assert min(cp.slack_s.values()) >= -1e-9
    assert all(abs(cp.slack_s[v]) < 1e-9 for v in cp.path)


@pytest.mark.parametrize("preset", ["codewriter", "deep_research"])
def test_preset_invariants(preset):
    _check_critical_path(getattr(agents, preset)())


def test_random_dag_invariants():
    rng = np.random.default_rng(7)
    p = agents.RandomDagParams(depth=10, fan_out=3, max_join=3)
    for _ in range(40):
        g = agents.random_dag(rng, p)
        _check_critical_path(g)
        llm = [v for v, a in g.nodes(data=True) if a["kind"] == agents.LLM]
        # depth counts LLM calls on the longest chain: the last layer is at depth p.depth
        assert max(agents.critical_path(g).depth.values()) == p.depth
        assert all(g.in_degree(v) <= p.max_join for v in llm)
        assert all(g.in_degree(v) >= 1 for v in llm[1:])  # only the first call is a root


def test_cycle_and_csv_errors(tmp_path):
    g = nx.DiGraph(name="loop", initial_tokens=10)
    g.add_node("a", kind="llm", output_tokens=5, template_tokens=1, importance=0.0)
    g.add_node("b", kind="llm", output_tokens=5, template_tokens=1, importance=0.0)
    g.add_edges_from([("a", "b"), ("b", "a")])
    with pytest.raises(InputError, match="cycle"):
        agents.check_template(g)
    bad = tmp_path / "bad.csv"
    bad.write_text("node,kind\nx,llm\n")
    with pytest.raises(InputError) as e:
        agents.read_dag_csv(bad)
    assert e.value.source == str(bad) and e.value.where == "line 1"
    bad.write_text(",".join(agents.CSV_COLUMNS) + "\nx,llm,ghost,100,,0,True\n")
    with pytest.raises(InputError, match="predecessor 'ghost'"):
        agents.read_dag_csv(bad)


def test_instances_share_prefixes_append_only():
    t = instantiate(agents.codewriter(), 3, 1.0, seed=2)
    validate(t)
    rows, d = t.rows, t.dag
    assert len(t) == 3 * 27 and d.n_apps == 3
    off, h = d.hashes(16, rows["output_tokens"])
    for c in range(len(t)):
        p = rows["parent_id"][c]
        if p < 0:
            continue
        assert rows["app_id"][p] == rows["app_id"][c]
        assert rows["input_tokens"][c] >= rows["input_tokens"][p] + rows["output_tokens"][p]
        k = (rows["input_tokens"][p] + rows["output_tokens"][p]) // 16
        np.testing.assert_array_equal(h[off[c]:off[c] + k], h[off[p]:off[p] + k])
    # a join (reviewer_1) holds each code_write output segment exactly once
    r = next(i for i in range(27) if d.names[d.request_node[i]] == "reviewer_1")
    segs = d.seg_ids[d.seg_offsets[r]:d.seg_offsets[r + 1]]
    assert len(set(segs.tolist())) == len(segs)
    writers = [i for i in range(27) if d.names[d.request_node[i]].startswith("code_write_")]
    assert all(d.out_seg[w] in set(segs.tolist()) for w in writers)
    # apps share nothing (no shared system prompt in the preset)
    first = set(h[off[0]:off[27]].tolist())
    assert first.isdisjoint(h[off[27]:off[54]].tolist())


def test_sequence_hashes_are_prefix_keyed():
    a = sequence_hashes(np.array([1, 2], np.uint64), np.array([40, 8]), 16)
    b = sequence_hashes(np.array([1, 3], np.uint64), np.array([40, 30]), 16)
    assert len(a) == 3 and len(b) == 5
    assert a[0] == b[0] and a[1] == b[1] and a[2] != b[2]  # block 2 holds tokens of segment 2 vs 3


def test_arrivals_and_tool_draws():
    t = instantiate(agents.codewriter(), 400, 2.0, seed=1)
    gaps = np.diff(t.dag.app_arrival_s)
    assert t.dag.app_arrival_s[0] == 0.0
    assert gaps.mean() == pytest.approx(0.5, rel=0.1)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.15)  # exponential gaps: CV 1
    tools = t.dag.kind == 1
    np.testing.assert_array_equal(t.dag.duration_s[tools], t.dag.predicted_s[tools])  # declared waits exact
    even = instantiate(agents.codewriter(), 5, 0.5, seed=1, arrival="even")
    np.testing.assert_allclose(even.dag.app_arrival_s, [0, 2, 4, 6, 8])
    rng = np.random.default_rng(0)
    m = measured_mixture()
    x = m.sample(rng, 200_000)
    assert np.mean(x <= 0.010) == pytest.approx(0.60 + 0.25 * 0.0 + 0.15 * 0.0, abs=0.01)
    heavy = LogNormal.from_p99(3.0, 60.0)
    y = heavy.sample(rng, 200_000)
    assert np.median(y) == pytest.approx(3.0, rel=0.03) and np.quantile(y, 0.99) == pytest.approx(60, rel=0.08)
    assert m.mean_s == pytest.approx(float(np.mean(x)), rel=0.1)


def test_load_workload_names_apps():
    t = load_workload("codewriter-like", seed=0, qps=1.0, max_requests=3)
    assert t.dag.n_apps == 3 and len(t) == 81
    t = load_workload("deep-research-like", seed=0, qps=0.2, duration_s=30.0)
    assert (t.dag.app_arrival_s < 30.0).all()
    t = load_workload("random-dag", seed=3, qps=1.0, max_requests=2)
    assert t.dag.n_apps == 2
    with pytest.raises(InputError, match="apps/s"):
        instantiate(agents.codewriter(), 2, 0.0)
    if CSV.is_file():
        t = load_workload(str(CSV), qps=1.0, max_requests=1)
        assert len(t) == 27
