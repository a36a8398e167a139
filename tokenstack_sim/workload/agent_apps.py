"""Agent applications arriving at a rate, as a request table plus the dependency graph of every app.

`instantiate(template_factory, n_apps, rate, seed)` draws app arrival times (Poisson at ``rate`` apps/s,
or evenly spaced as TokenCake's preflight workload does), a copy of the template per app (a factory may
return a different random DAG each time), and every tool call's real duration. It returns an
`AgentTable`: a `RequestTable` with one row per LLM call (``arrival_s`` = its app's arrival, the earliest
it can be released; ``app_id``, ``session_id`` = the app; ``agent_id``; ``parent_id`` = the call whose
context it extends) and ``dag``, an `AgentDag` with the flattened graph over all apps.

Prompts as token segments. Every piece of text is a *segment* with a 64-bit id and a length: the shared
system prompt, the app's task, each call's template, each call's output, each tool's result. A call's
prompt is a list of segments (append-only, module docstring of agents.py), its full sequence that list
plus its output segment. The hash of KV block j of a sequence is derive(C_i, e - s_i), where block j ends
at token e = B(j + 1) inside segment i (starting at token s_i) and C_i chains the segment ids up to i.
Equal hashes therefore mean equal token prefixes, and a successor's prompt hashes equal those of its
predecessor's prompt *and output* blocks: the engine's prefix cache sees what an agent can reuse.
`AgentDag.hashes(B)` gives those per-request hash arrays for any block size; the table's own
``prefix_hashes`` are the prompt blocks at ``HASH_BLOCK_TOKENS``.

Agents. A call continues the agent of the call whose context it extends when it is that call's only
LLM successor and that call its only LLM predecessor (a linear chain, e.g. validate -> repair ->
write); a fan-out branch or a join starts a new agent. TokenCake's stalls are the tool calls between two
calls of one agent (and, more generally, of a call and the successors that reuse its context).
Leaves out: token-level content (only segment identity), a result or template that differs between
the apps of a preset (each is unique per app), sampling randomness of output lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import networkx as nx
import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.agents import LLM, TOOL, critical_path, predicted_s
from tokenstack_sim.workload.hashing import derive, mix64
from tokenstack_sim.workload.table import NO_ID, RequestTable, empty_rows

HASH_BLOCK_TOKENS = 16  # the table's prompt hashes: vLLM's default block (serving.md §2.1)
ARRIVALS = ("poisson", "even")
_SEG_TAGS = {"shared": 1, "task": 2, "template": 3, "output": 4, "result": 5}
_ROOT = np.uint64(0x5E6_0000_0000_0001)


@dataclass
class AgentDag:
    """The DAG of every app, flattened: node i belongs to app ``app[i]``; LLM nodes map to requests."""
    kind: np.ndarray  # int8: 0 LLM call, 1 tool call
    app: np.ndarray  # int64
    request: np.ndarray  # int64: the request row of an LLM node, -1 for a tool node
    duration_s: np.ndarray  # float64: a tool's real duration (0 for LLM nodes)
    predicted_s: np.ndarray  # float64: what a runtime expects a tool to take (0 for LLM nodes)
    pred_offsets: np.ndarray  # CSR of predecessors
    pred_index: np.ndarray
    succ_offsets: np.ndarray  # CSR of successors
    succ_index: np.ndarray
    names: list  # template node name per node
    app_arrival_s: np.ndarray  # per app
    # static priority features (predicted times, agents.critical_path)
    remaining_s: np.ndarray  # longest predicted time from the node's start to its app's end
    slack_s: np.ndarray  # 0 on the app's critical path
    depth: np.ndarray  # LLM calls on the longest chain ending at the node
    fanout: np.ndarray  # successors
    importance: np.ndarray  # the template's mark (TokenCake's importance), 0 or 1
    request_node: np.ndarray  # per request: its node
    # prompt segments per request (CSR) and segment lengths; None for a table without segment structure
    seg_offsets: np.ndarray | None = None
    seg_ids: np.ndarray | None = None
    seg_lens: np.ndarray | None = None
    out_seg: np.ndarray | None = None  # per request: its output segment id
    templates: list = field(default_factory=list)  # the template graph of each app (for reports/tests)
    _hash_cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_nodes(self) -> int:
        return len(self.kind)

    @property
    def n_apps(self) -> int:
        return len(self.app_arrival_s)

    def preds(self, i: int) -> np.ndarray:
        return self.pred_index[self.pred_offsets[i]:self.pred_offsets[i + 1]]

    def succs(self, i: int) -> np.ndarray:
        return self.succ_index[self.succ_offsets[i]:self.succ_offsets[i + 1]]

    def hashes(self, block_size: int, output_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR (offsets, hashes) of every request's full sequence (prompt + ``output_tokens[r]``) at
        ``block_size`` tokens per block, ceil(tokens / block_size) hashes each (module docstring)."""
        key = int(block_size)
        if key in self._hash_cache:
            return self._hash_cache[key]
        n = len(self.request_node)
        counts = np.zeros(n, np.int64)
        parts = []
        for r in range(n):
            a, b = self.seg_offsets[r], self.seg_offsets[r + 1]
            ids = np.append(self.seg_ids[a:b], self.out_seg[r])
            lens = np.append(self.seg_lens[a:b], int(output_tokens[r]))
            h = sequence_hashes(ids, lens, block_size)
            parts.append(h)
            counts[r] = len(h)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        flat = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        self._hash_cache[key] = (offsets, flat)
        return offsets, flat


def sequence_hashes(ids: np.ndarray, lens: np.ndarray, block_size: int, partial_last: bool = True) -> np.ndarray:
    """Chained block hashes of a sequence of segments (module docstring); ``partial_last`` hashes the last,
    partial block too (the table convention for prompts)."""
    lens = np.asarray(lens, np.int64)
    keep = lens > 0
    ids, lens = np.asarray(ids, np.uint64)[keep], lens[keep]
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.uint64)
    # C_i = derive(C_{i-1}, id_i), chained over the segments (few per sequence)
    chain = np.empty(len(ids), np.uint64)
    c = _ROOT
    for i, s in enumerate(ids.tolist()):
        c = derive(np.uint64(c), np.uint64(s))
        chain[i] = c
    ends = np.cumsum(lens)
    starts = ends - lens
    nb = -(-total // block_size) if partial_last else total // block_size
    e = np.minimum((np.arange(nb, dtype=np.int64) + 1) * block_size, total)
    seg = np.searchsorted(ends, e, side="left")
    return derive(chain[seg], (e - starts[seg]).astype(np.uint64))


@dataclass
class AgentTable(RequestTable):
    """A request table whose rows are the LLM calls of agent apps, with their graph in ``dag``."""
    dag: AgentDag | None = None


def _seg_id(app_key: np.uint64, node: int, tag: str) -> int:
    return int(derive(derive(app_key, np.uint64(node)), np.uint64(_SEG_TAGS[tag])))


def _arrivals(n_apps: int, rate: float, arrival: str, rng: np.random.Generator) -> np.ndarray:
    if arrival == "poisson":
        return np.cumsum(rng.exponential(1.0 / rate, n_apps)) - 0.0
    if arrival == "even":
        return np.arange(n_apps) / rate
    raise InputError(f"expected one of {', '.join(ARRIVALS)}, got {arrival!r}", where="arrival")


def csr_graph(preds: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A graph given as each node's predecessor list, in CSR form: (pred_offsets, pred_index, succ_offsets,
    succ_index), successors in node order (the `AgentDag` arrays)."""
    n = len(preds)
    pred_offsets = np.zeros(n + 1, np.int64)
    np.cumsum([len(p) for p in preds], out=pred_offsets[1:])
    pred_index = np.asarray([p for ps in preds for p in ps], np.int64)
    succ_lists: list[list[int]] = [[] for _ in range(n)]
    for v, ps in enumerate(preds):
        for p in ps:
            succ_lists[p].append(v)
    succ_offsets = np.zeros(n + 1, np.int64)
    np.cumsum([len(s) for s in succ_lists], out=succ_offsets[1:])
    succ_index = np.asarray([s for ss in succ_lists for s in ss], np.int64)
    return pred_offsets, pred_index, succ_offsets, succ_index


def instantiate(template: Callable[[np.random.Generator], nx.DiGraph] | nx.DiGraph, n_apps: int, rate: float, *,
                seed: int = 0, arrival: str = "poisson", predictor: str = "estimate",
                name: str | None = None) -> AgentTable:
    """`n_apps` apps of `template` (a graph, or a factory called with the run's generator per app)
    arriving at `rate` apps/s; see the module docstring. ``predictor``: what runtimes are told a tool
    takes (`agents.predicted_s`)."""
    if not isinstance(n_apps, (int, np.integer)) or n_apps < 1:
        raise InputError(f"expected at least 1 app, got {n_apps!r}", where="apps")
    if not (np.isfinite(rate) and rate > 0):
        raise InputError(f"expected an app rate > 0 apps/s, got {rate!r}", where="qps")
    if predictor not in ("estimate", "default"):
        raise InputError(f"expected estimate or default, got {predictor!r}", where="predictor")
    rng = np.random.default_rng(seed)
    app_arrival = _arrivals(int(n_apps), float(rate), arrival, rng)
    if arrival == "poisson":
        app_arrival = app_arrival - app_arrival[0]  # the first app arrives at 0
    kinds, apps, req_of, dur, pred, names = [], [], [], [], [], []
    remaining, slack, depth, fanout, importance = [], [], [], [], []
    preds_l: list[list[int]] = []
    rows_l = []  # (app, node global, input_tokens, output_tokens, agent, parent request)
    seg_l: list[tuple[np.ndarray, np.ndarray]] = []
    out_seg_l = []
    templates = []
    next_agent = 0
    for a in range(int(n_apps)):
        g = template(rng) if callable(template) and not isinstance(template, nx.DiGraph) else template
        templates.append(g)
        order = list(nx.topological_sort(g))
        base = len(kinds)
        idx = {v: base + k for k, v in enumerate(order)}
        cp = critical_path(g, predictor=predictor)
        app_key = mix64(np.uint64(seed * 1_000_003 + a) + _ROOT)
        shared_id = int(derive(_ROOT, np.uint64(0xC0FFEE)))  # the same for every app of any preset
        shared = int(g.graph.get("shared_tokens", 0))
        task = int(g.graph.get("initial_tokens", 0))
        root_seq = ([shared_id] if shared else []) + ([_seg_id(app_key, 0, "task")] if task else [])
        lens: dict[int, int] = {}
        if shared:
            lens[shared_id] = shared
        if task:
            lens[root_seq[-1]] = task
        seq: dict[str, list[int]] = {}  # node -> its full sequence (segment ids) as successors see it
        agent_of: dict[str, int] = {}
        llm_preds = {v: _llm_neighbors(g, v, "pred") for v in order}
        llm_succs = {v: _llm_neighbors(g, v, "succ") for v in order}
        tool_draw = {}
        for v in order:
            if g.nodes[v]["kind"] == TOOL:
                tool_draw[v] = float(g.nodes[v]["duration"].sample(rng, 1)[0])
        for v in order:
            at = g.nodes[v]
            ps = list(g.predecessors(v))
            merged = _merge([seq[p] for p in ps]) if ps else list(root_seq)
            i = idx[v]
            kinds.append(0 if at["kind"] == LLM else 1)
            apps.append(a)
            names.append(v)
            preds_l.append([idx[p] for p in ps])
            remaining.append(cp.remaining_s[v])
            slack.append(cp.slack_s[v])
            depth.append(cp.depth[v])
            fanout.append(g.out_degree(v))
            importance.append(float(at.get("importance", 0.0)))
            if at["kind"] == TOOL:
                req_of.append(-1)
                dur.append(tool_draw[v])
                pred.append(predicted_s(at, predictor))
                res = int(at["result_tokens"])
                if res:
                    sid = _seg_id(app_key, i - base, "result")
                    lens[sid] = res
                    merged = merged + [sid]
                seq[v] = merged
                continue
            tmpl = int(at["template_tokens"])
            prompt = list(merged)
            if tmpl:
                sid = _seg_id(app_key, i - base, "template")
                lens[sid] = tmpl
                prompt.append(sid)
            if not prompt:
                raise InputError(f"LLM node {v!r} has an empty prompt (no initial, template or predecessor tokens)",
                                 where=f"{g.graph.get('name', 'dag')}.{v}")
            out_id = _seg_id(app_key, i - base, "output")
            lens[out_id] = int(at["output_tokens"])
            seq[v] = prompt + [out_id]
            # agent: continue the single LLM predecessor's agent on a linear chain
            lp = llm_preds[v]
            if len(lp) == 1 and len(llm_succs[lp[0]]) == 1:
                agent_of[v] = agent_of[lp[0]]
            else:
                agent_of[v] = next_agent
                next_agent += 1
            req_of.append(len(rows_l))
            dur.append(0.0)
            pred.append(0.0)
            parent_node = _primary_llm_pred(g, v)
            rows_l.append((a, i, int(sum(lens[s] for s in prompt)), int(at["output_tokens"]), agent_of[v],
                           None if parent_node is None else idx[parent_node]))
            ids = np.asarray(prompt, np.uint64)
            seg_l.append((ids, np.asarray([lens[s] for s in prompt], np.int64)))
            out_seg_l.append(out_id)
    n_nodes = len(kinds)
    req_of_arr = np.asarray(req_of, np.int64)
    rows = empty_rows(len(rows_l))
    for r, (a, i, inp, out, agent, parent_node) in enumerate(rows_l):
        rows[r]["arrival_s"] = app_arrival[a]
        rows[r]["input_tokens"] = inp
        rows[r]["output_tokens"] = out
        rows[r]["session_id"] = a
        rows[r]["app_id"] = a
        rows[r]["agent_id"] = agent
        rows[r]["parent_id"] = req_of_arr[parent_node] if parent_node is not None else NO_ID
    pred_offsets, pred_index, succ_offsets, succ_index = csr_graph(preds_l)
    seg_offsets = np.zeros(len(seg_l) + 1, np.int64)
    np.cumsum([len(s[0]) for s in seg_l], out=seg_offsets[1:])
    dag = AgentDag(
        kind=np.asarray(kinds, np.int8), app=np.asarray(apps, np.int64), request=req_of_arr,
        duration_s=np.asarray(dur, float), predicted_s=np.asarray(pred, float),
        pred_offsets=pred_offsets, pred_index=pred_index, succ_offsets=succ_offsets, succ_index=succ_index,
        names=names, app_arrival_s=np.asarray(app_arrival, float), remaining_s=np.asarray(remaining, float),
        slack_s=np.asarray(slack, float), depth=np.asarray(depth, np.int64), fanout=np.asarray(fanout, np.int64),
        importance=np.asarray(importance, float),
        request_node=np.asarray([r[1] for r in rows_l], np.int64),
        seg_offsets=seg_offsets,
        seg_ids=np.concatenate([s[0] for s in seg_l]) if seg_l else np.zeros(0, np.uint64),
        seg_lens=np.concatenate([s[1] for s in seg_l]) if seg_l else np.zeros(0, np.int64),
        out_seg=np.asarray(out_seg_l, np.uint64), templates=templates)
    # the table's prompt hashes at HASH_BLOCK_TOKENS (the partial last block hashed too)
    counts = -(-rows["input_tokens"] // HASH_BLOCK_TOKENS)
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = np.concatenate([sequence_hashes(dag.seg_ids[dag.seg_offsets[r]:dag.seg_offsets[r + 1]],
                                           dag.seg_lens[dag.seg_offsets[r]:dag.seg_offsets[r + 1]],
                                           HASH_BLOCK_TOKENS) for r in range(len(rows))])
    label = name or templates[0].graph.get("name", "agents")
    meta = {"source": "agent-dag", "workload": label, "seed": int(seed), "apps": int(n_apps), "app_rate": float(rate),
            "arrival": arrival, "predictor": predictor, "nodes": n_nodes, "llm_calls": len(rows),
            "tool_calls": int(np.count_nonzero(dag.kind == 1))}
    return AgentTable(rows, offsets, flat, HASH_BLOCK_TOKENS, meta, dag=dag)


def _merge(seqs: list[list[int]]) -> list[int]:
    """Predecessor sequences concatenated with repeated segments kept once (the first occurrence)."""
    out, seen = [], set()
    for s in seqs:
        for x in s:
            if x not in seen:
                seen.add(x)
                out.append(x)
    return out


def _llm_neighbors(g: nx.DiGraph, v: str, direction: str) -> list[str]:
    """The nearest LLM nodes before (after) v, looking through tool nodes."""
    out, stack, seen = [], list(g.predecessors(v) if direction == "pred" else g.successors(v)), set()
    while stack:
        u = stack.pop()
        if u in seen:
            continue
        seen.add(u)
        if g.nodes[u]["kind"] == LLM:
            out.append(u)
        else:
            stack.extend(g.predecessors(u) if direction == "pred" else g.successors(u))
    return sorted(out)


def _primary_llm_pred(g: nx.DiGraph, v: str) -> str | None:
    """The LLM call whose sequence v's prompt starts with (through its first predecessor), or None."""
    u = v
    while True:
        ps = list(g.predecessors(u))
        if not ps:
            return None
        u = ps[0]
        if g.nodes[u]["kind"] == LLM:
            return u
