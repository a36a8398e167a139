"""Agent applications as DAG templates (networkx): LLM-call nodes and function-call (tool) nodes.

A template is an `nx.DiGraph` whose nodes carry
- ``kind = "llm"``: an LLM call. ``output_tokens`` (its output budget; the call generates exactly that
  many tokens), ``template_tokens`` (the new instruction text it appends to its context),
  ``importance`` (1.0 where the source marks the node critical, else 0.0; a spatial-scheduler input);
- ``kind = "tool"``: a function call. ``tool`` (its kind), ``duration`` (a `tool_time.ToolTime` the real
  duration is drawn from), ``estimate_s`` (a declared duration estimate, TokenCake's ``predict_time``, or
  None), ``result_tokens`` (the tool output appended to the context of what follows).
Graph attributes: ``name``, ``initial_tokens`` (the application's task context, unique per app),
``shared_tokens`` (a system prompt shared by every app of the preset, 0 for none), ``source``.

The context of a call is append-only (workloads.md §2(a)): an LLM node's prompt is its predecessors'
full sequences (their prompt and output, through any tool's result) concatenated with repeated parts
kept once, then its own template; a root starts from the shared prompt and the app's task. That is
expressed in `agent_apps.py` as chained prefix hashes, so the engine's prefix cache sees the sharing.

Presets: `codewriter` (TokenCake's CodeWriter structure, transcribed below), `deep_research` (a
Deep-Research-like app, structure [E]), `random_dag` (depth, fan-out, joins; parameters from
workloads.md's suggested synthesis ranges). `read_dag_csv` reads the tokencake_dag CSV format.
`critical_path` gives the longest path by predicted time and each node's slack.
Leaves out: conditional branches and loops (a DAG runs every node once), tool calls issued in the middle
of a generation (a call ends its LLM node), LLM output lengths that differ from the budget.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.tool_time import Fixed, LogNormal, ToolTime, measured_mixture

LLM, TOOL = "llm", "tool"

# InferCept's synthetic API returns 128 tokens per call (serving.md §3.3, benchmark_api_simu.py).
DEFAULT_RESULT_TOKENS = 128
# [E] no source gives the per-call instruction template; 256 tokens is a few sentences of role and task
# instructions. Sweepable (`template_tokens`).
DEFAULT_TEMPLATE_TOKENS = 256
# workloads.md §2(a): CodeWriter's initial context is ~4.6k tokens (conversation-tools.json).
CODEWRITER_INITIAL_TOKENS = 4600
# [E] time per output token a graph priority assumes for an LLM node (a ~30 ms TPOT, the order of a
# 14B model decoding in a loaded batch); only the ranking of nodes depends on it.
LLM_SECONDS_PER_TOKEN = 0.03

# TokenCake's CodeWriter DAG, transcribed from ../shared/traces/tokencake_dag/tokencake_codewriter_dag.csv
# (itself from pku-lemonade/TokenCake tools/tokencake_experiments/datasets/conversation-tools.json):
# (node, kind, predecessors, max_tokens, tool_kind, tool_duration_s, critical_path). Tool durations are
# the benchmark's declared waits. tests/test_agents.py checks this table against the CSV when present.
CODEWRITER_ROWS = (
    ("start_mcp", "input", "", 0, "", 0.0, True),
    ("architect_1", "llm", "start_mcp", 200, "", 0.0, True),
    ("search_1", "llm", "architect_1", 128, "search", 4.0, True),
    ("judger_1", "llm", "search_1", 128, "conditional_execution", 0.4, True),
    ("architect_2", "llm", "judger_1", 200, "", 0.0, True),
    ("search_2", "llm", "architect_2", 128, "search", 4.0, True),
    ("judger_2", "llm", "search_2", 128, "conditional_execution", 0.4, True),
    ("file_write_plan", "llm", "judger_2", 128, "file_write", 0.1, True),
    ("programmer_1_validate_patch", "llm", "file_write_plan", 400, "tool_call(branch_patch_validation)", 8.0, True),
    ("programmer_1_repair", "llm", "programmer_1_validate_patch", 400, "", 0.0, True),
    ("code_write_1", "llm", "programmer_1_repair", 128, "file_write", 0.1, True),
    ("programmer_2_validate_patch", "llm", "file_write_plan", 400, "tool_call(branch_patch_validation)", 8.0, False),
    ("programmer_2_repair", "llm", "programmer_2_validate_patch", 400, "", 0.0, False),
    ("code_write_2", "llm", "programmer_2_repair", 128, "file_write", 0.1, False),
    ("programmer_3_validate_patch", "llm", "file_write_plan", 400, "tool_call(branch_patch_validation)", 8.0, False),
    ("programmer_3_repair", "llm", "programmer_3_validate_patch", 400, "", 0.0, False),
    ("code_write_3", "llm", "programmer_3_repair", 128, "file_write", 0.1, False),
    ("reviewer_1", "llm", "code_write_1 code_write_2 code_write_3", 200, "", 0.0, True),
    ("reviewer_2", "llm", "code_write_1 code_write_2 code_write_3", 200, "", 0.0, False),
    ("reviser_1_validate_patch", "llm", "reviewer_1 reviewer_2", 400, "tool_call(branch_patch_validation)", 10.0, True),
    ("reviser_1_repair", "llm", "reviser_1_validate_patch", 400, "", 0.0, True),
    ("revised_code_write_1", "llm", "reviser_1_repair", 128, "file_write", 0.1, True),
    ("reviser_2_validate_patch", "llm", "reviewer_1 reviewer_2", 400, "tool_call(branch_patch_validation)", 10.0, False),
    ("reviser_2_repair", "llm", "reviser_2_validate_patch", 400, "", 0.0, False),
    ("revised_code_write_2", "llm", "reviser_2_repair", 128, "file_write", 0.1, False),
    ("external_eval", "llm", "reviewer_2", 128, "external_tool_eval", 4.5, True),
    ("user_confirm", "llm", "external_eval", 128, "user_confirm", 3.5, True),
    ("test_node", "llm", "user_confirm", 128, "test", 5.5, True),
    ("end_mcp", "collect", "test_node revised_code_write_1 revised_code_write_2", 0, "", 0.0, True),
)
CSV_COLUMNS = ("node", "kind", "predecessors", "max_tokens", "tool_kind", "tool_duration_s", "critical_path")


def _llm(g: nx.DiGraph, name: str, output_tokens: int, template_tokens: int, importance: float = 0.0) -> None:
    if output_tokens < 1:
        raise InputError(f"LLM node {name!r} needs an output budget >= 1, got {output_tokens}",
                         where=f"{name}.output_tokens")
    g.add_node(name, kind=LLM, output_tokens=int(output_tokens), template_tokens=int(template_tokens),
               importance=float(importance))


def _tool(g: nx.DiGraph, name: str, tool: str, duration: ToolTime, estimate_s: float | None,
          result_tokens: int) -> None:
    g.add_node(name, kind=TOOL, tool=tool, duration=duration, estimate_s=estimate_s,
               result_tokens=int(result_tokens))


def from_rows(rows, *, name: str, source: str, initial_tokens: int = CODEWRITER_INITIAL_TOKENS,
              template_tokens: int = DEFAULT_TEMPLATE_TOKENS, result_tokens: int = DEFAULT_RESULT_TOKENS,
              duration_sigma: float = 0.0, shared_tokens: int = 0) -> nx.DiGraph:
    """A template from rows in the tokencake_dag CSV format (CSV_COLUMNS). An ``llm`` row with a tool
    kind is an LLM call followed by that tool call (its successors depend on the tool's end); ``input``
    and ``collect`` rows are zero-time tool nodes. ``duration_sigma`` > 0 makes the real duration
    lognormal around the declared one (which stays the estimate); 0 keeps the declared waits exact."""
    g = nx.DiGraph(name=name, initial_tokens=int(initial_tokens), shared_tokens=int(shared_tokens), source=source)
    out_of: dict[str, str] = {}
    for i, row in enumerate(rows):
        node, kind, preds, max_tokens, tool_kind, dur, critical = row
        where = f"row {i + 1} ({node})"
        if node in out_of:
            raise InputError(f"node {node!r} appears twice", where=where)
        if kind in ("input", "collect"):
            _tool(g, node, kind, Fixed(0.0), 0.0, 0)
            out_of[node] = node
        elif kind == "llm":
            _llm(g, node, int(max_tokens), template_tokens, 1.0 if critical else 0.0)
            out_of[node] = node
            if tool_kind:
                if not (math.isfinite(dur) and dur >= 0):
                    raise InputError(f"tool_duration_s must be a number >= 0, got {dur!r}", where=where)
                t = f"{node}:{tool_kind}"
                d = Fixed(float(dur)) if duration_sigma <= 0 or dur <= 0 else LogNormal(float(dur), duration_sigma)
                _tool(g, t, tool_kind, d, float(dur), result_tokens)
                g.add_edge(node, t)
                out_of[node] = t
        else:
            raise InputError(f"kind must be input, llm or collect, got {kind!r}", where=where)
        for p in str(preds).split():
            if p not in out_of:
                raise InputError(f"predecessor {p!r} is not an earlier node", where=where)
            g.add_edge(out_of[p], node)
    check_template(g)
    return g


def read_dag_csv(path: str | Path, **kwargs) -> nx.DiGraph:
    """A template from a tokencake_dag CSV file (columns CSV_COLUMNS, a header line first)."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_COLUMNS:
            raise InputError(f"expected the header {','.join(CSV_COLUMNS)}, got {header}", source=path, where="line 1")
        rows = []
        for line, rec in enumerate(reader, start=2):
            if not rec:
                continue
            if len(rec) != len(CSV_COLUMNS):
                raise InputError(f"expected {len(CSV_COLUMNS)} columns, got {len(rec)}", source=path, where=f"line {line}")
            try:
                rows.append((rec[0], rec[1], rec[2], int(rec[3] or 0), rec[4], float(rec[5] or 0.0),
                             rec[6].strip().lower() == "true"))
            except ValueError as exc:
                raise InputError(f"bad number ({exc})", source=path, where=f"line {line}") from None
    try:
        return from_rows(rows, name=path.stem, source=str(path), **kwargs)
    except InputError as exc:
        raise exc.located(source=path) from None


def is_dag_csv(path: Path) -> bool:
    """Does the file start with the tokencake_dag CSV header?"""
    try:
        with open(path) as f:
            first = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return tuple(first.split(",")) == CSV_COLUMNS


def codewriter(**kwargs) -> nx.DiGraph:
    """TokenCake's CodeWriter: 29 nodes (27 LLM calls, start, collect) in the CSV, 18 of the calls
    followed by a declared tool wait (66.9 s in all)."""
    return from_rows(CODEWRITER_ROWS, name="codewriter", source="TokenCake conversation-tools.json via "
                     "../shared/traces/tokencake_dag/tokencake_codewriter_dag.csv", **kwargs)


def deep_research(*, researchers: int = 4, rounds: int = 2, initial_tokens: int = 2000,
                  template_tokens: int = DEFAULT_TEMPLATE_TOKENS, result_tokens: int = 1024,
                  shared_tokens: int = 0) -> nx.DiGraph:
    """A Deep-Research-like app [E]: TokenCake also evaluates a DeepResearch app whose structure was not
    extracted (workloads.md §2(a)), so this one is built from the common planner / parallel researchers /
    writer pattern. A planner fans out to ``researchers`` chains (fan-out 2-4, workloads.md); each runs
    ``rounds`` of query -> web search -> read -> page fetch, then writes a note; the notes join into a
    synthesizer, then writer -> critic -> fact check -> reviser. Depth 4 + 2 * rounds LLM calls (10 by
    default; workloads.md suggests depth 10-17). Outputs from {128, 200, 400} (workloads.md).
    Tool times from the measured mixture's classes (workloads.md §2(a)): web search and fact check
    heavy (lognormal, median 3 s, p99 60 s), page fetch the middle class (median 0.35 s); estimates
    are the classes' means (what a duration history converges to). ``result_tokens`` [E] 1024: search
    results and fetched pages are longer than InferCept's 128-token API returns. ``initial_tokens`` [E]
    2,000: a research question with instructions."""
    if researchers < 1 or rounds < 1:
        raise InputError(f"need researchers >= 1 and rounds >= 1, got {researchers}, {rounds}",
                         where="deep_research")
    heavy = LogNormal.from_p99(3.0, 60.0)
    mid = measured_mixture().parts[1][1]
    g = nx.DiGraph(name="deep-research", initial_tokens=int(initial_tokens), shared_tokens=int(shared_tokens),
                   source="[E] planner/researchers/writer pattern; tool classes from workloads.md §2(a)")
    _llm(g, "planner", 400, template_tokens, 1.0)
    notes = []
    for i in range(1, researchers + 1):
        prev = "planner"
        for r in range(1, rounds + 1):
            q, s, rd, f = f"query_{i}_{r}", f"query_{i}_{r}:web_search", f"read_{i}_{r}", f"read_{i}_{r}:fetch"
            _llm(g, q, 128, template_tokens, 1.0 if i == 1 else 0.0)
            _tool(g, s, "web_search", heavy, heavy.mean_s, result_tokens)
            _llm(g, rd, 400, template_tokens, 1.0 if i == 1 else 0.0)
            _tool(g, f, "fetch", mid, mid.mean_s, result_tokens)
            g.add_edges_from([(prev, q), (q, s), (s, rd), (rd, f)])
            prev = f
        note = f"note_{i}"
        _llm(g, note, 200, template_tokens, 1.0 if i == 1 else 0.0)
        g.add_edge(prev, note)
        notes.append(note)
    _llm(g, "synthesizer", 400, template_tokens, 1.0)
    g.add_edges_from((n, "synthesizer") for n in notes)
    _llm(g, "writer", 400, template_tokens, 1.0)
    _llm(g, "critic", 200, template_tokens, 1.0)
    _tool(g, "critic:fact_check", "fact_check", heavy, heavy.mean_s, result_tokens)
    _llm(g, "reviser", 400, template_tokens, 1.0)
    g.add_edges_from([("synthesizer", "writer"), ("writer", "critic"), ("critic", "critic:fact_check"),
                      ("critic:fact_check", "reviser")])
    check_template(g)
    return g


@dataclass(frozen=True)
class RandomDagParams:
    """Ranges from workloads.md §2(a) "Suggested synthesis parameters [EST]"."""
    depth: int = 12  # LLM layers; workloads.md: depth 10-17
    fan_out: int = 3  # most successors of a node; workloads.md: fan-out 2-4
    max_join: int = 3  # most predecessors of a join; workloads.md: joins 2-3-way
    join_prob: float = 0.3  # [E] chance that a node of the next layer also depends on a second node
    max_width: int = 4  # [E] widest layer (keeps an app's parallelism near CodeWriter's 3)
    tool_prob: float = 0.6  # [E] share of LLM calls followed by a tool call (CodeWriter: 18 of 27)
    outputs: tuple = (128, 200, 400)  # workloads.md: outputs per call {128, 200, 400}
    initial_tokens: int = 2000  # [E] a task description with instructions
    template_tokens: int = DEFAULT_TEMPLATE_TOKENS
    result_tokens: int = DEFAULT_RESULT_TOKENS

    def __post_init__(self):
        for name in ("depth", "fan_out", "max_join", "max_width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"expected an integer >= 1, got {v!r}", where=f"random_dag.{name}")
        for name in ("join_prob", "tool_prob"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise InputError(f"expected a probability in [0, 1], got {v!r}", where=f"random_dag.{name}")
        if not self.outputs or min(self.outputs) < 1:
            raise InputError(f"expected output budgets >= 1, got {self.outputs!r}", where="random_dag.outputs")


def random_dag(rng: np.random.Generator, params: RandomDagParams = RandomDagParams()) -> nx.DiGraph:
    """A random layered agent DAG: layer 0 is one LLM call; each node of a layer gets 1..fan_out
    successors in the next (new nodes while the layer is narrower than max_width, else existing
    ones); with probability join_prob a next-layer node also depends on another node of the layer (a
    join of at most max_join). Each LLM call is followed by a tool call with probability tool_prob,
    its time drawn from the measured mixture (estimate: the mixture's mean). The last layer's nodes
    are the app's sinks. Acyclic by construction (edges go from layer l to l + 1)."""
    p = params
    tools = measured_mixture()
    g = nx.DiGraph(name="random-dag", initial_tokens=p.initial_tokens, shared_tokens=0,
                   source="random layered DAG; ranges from workloads.md §2(a)")
    count = 0

    def new_llm() -> str:
        nonlocal count
        name = f"n{count}"
        count += 1
        _llm(g, name, int(rng.choice(p.outputs)), p.template_tokens, 0.0)
        return name

    def exit_of(v: str) -> str:
        """The node successors hang from: v's tool call if it has one."""
        for s in g.successors(v):
            if g.nodes[s]["kind"] == TOOL:
                return s
        return v

    def maybe_tool(v: str) -> None:
        if rng.random() < p.tool_prob:
            t = f"{v}:tool"
            _tool(g, t, "tool", tools, tools.mean_s, p.result_tokens)
            g.add_edge(v, t)

    layer = [new_llm()]
    maybe_tool(layer[0])
    for _ in range(1, p.depth):
        nxt: list[str] = []
        for v in layer:
            k = int(rng.integers(1, p.fan_out + 1))
            for _ in range(k):
                if len(nxt) < p.max_width:
                    c = new_llm()
                    nxt.append(c)
                else:
                    c = nxt[int(rng.integers(len(nxt)))]
                if not g.has_edge(exit_of(v), c) and g.in_degree(c) < p.max_join:
                    g.add_edge(exit_of(v), c)
        for c in nxt:
            if len(layer) > 1 and rng.random() < p.join_prob and g.in_degree(c) < p.max_join:
                v = layer[int(rng.integers(len(layer)))]
                if not g.has_edge(exit_of(v), c):
                    g.add_edge(exit_of(v), c)
        for c in nxt:
            maybe_tool(c)
        layer = nxt
    check_template(g)
    return g


def check_template(g: nx.DiGraph) -> None:
    """Raise InputError unless `g` is a usable template: acyclic, every node an llm or tool node with
    its attributes, at least one LLM call."""
    name = g.graph.get("name", "dag")
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        raise InputError(f"the graph has a cycle through {cycle[0][0]!r}", where=name)
    n_llm = 0
    for v, a in g.nodes(data=True):
        kind = a.get("kind")
        if kind == LLM:
            n_llm += 1
            if a.get("output_tokens", 0) < 1:
                raise InputError("LLM node needs output_tokens >= 1", where=f"{name}.{v}")
        elif kind == TOOL:
            if not isinstance(a.get("duration"), ToolTime):
                raise InputError("tool node needs a duration distribution", where=f"{name}.{v}")
        else:
            raise InputError(f"node kind must be {LLM!r} or {TOOL!r}, got {kind!r}", where=f"{name}.{v}")
    if n_llm == 0:
        raise InputError("the graph has no LLM call", where=name)
    if g.graph.get("initial_tokens", 0) < 0:
        raise InputError("initial_tokens must be >= 0", where=f"{name}.initial_tokens")


def predicted_s(a: dict, predictor: str = "estimate") -> float:
    """The duration a runtime expects for tool node attributes `a`: ``estimate`` = the declared estimate,
    else the distribution's mean (a converged duration history); ``default`` = TokenCake's 1 s."""
    from tokenstack_sim.workload.tool_time import DEFAULT_PREDICTION_S

    if predictor == "default":
        return DEFAULT_PREDICTION_S
    e = a.get("estimate_s")
    return float(e) if e is not None else float(a["duration"].mean_s)


def node_weight_s(a: dict, seconds_per_token: float = LLM_SECONDS_PER_TOKEN, predictor: str = "estimate") -> float:
    """Predicted time of a node: a tool's predicted duration, an LLM call's output x seconds per token."""
    return predicted_s(a, predictor) if a["kind"] == TOOL else a["output_tokens"] * seconds_per_token


@dataclass
class CriticalPath:
    length_s: float  # longest path from a root to a sink, by predicted node time
    path: list  # its nodes, root first
    remaining_s: dict  # node -> longest predicted time from its start to the end of the app
    slack_s: dict  # node -> how much later it may start without lengthening the app (0 on the path)
    depth: dict  # node -> LLM calls on the longest chain ending at it (roots 1)


def critical_path(g: nx.DiGraph, seconds_per_token: float = LLM_SECONDS_PER_TOKEN,
                  predictor: str = "estimate") -> CriticalPath:
    """Longest path by predicted node time (node weights, `node_weight_s`), with every node's remaining
    time and slack."""
    order = list(nx.topological_sort(g))
    w = {v: node_weight_s(g.nodes[v], seconds_per_token, predictor) for v in order}
    earliest = {}
    depth = {}
    for v in order:
        preds = list(g.predecessors(v))
        earliest[v] = max((earliest[p] + w[p] for p in preds), default=0.0)
        d = max((depth[p] for p in preds), default=0)
        depth[v] = d + (1 if g.nodes[v]["kind"] == LLM else 0)
    remaining = {}
    for v in reversed(order):
        remaining[v] = w[v] + max((remaining[s] for s in g.successors(v)), default=0.0)
    total = max(remaining[v] for v in order if g.in_degree(v) == 0)
    slack = {v: total - earliest[v] - remaining[v] for v in order}
    start = max((v for v in order if g.in_degree(v) == 0), key=lambda v: remaining[v])
    path = [start]
    while True:
        succ = list(g.successors(path[-1]))
        if not succ:
            break
        path.append(max(succ, key=lambda s: remaining[s]))
    return CriticalPath(total, path, remaining, slack, depth)
