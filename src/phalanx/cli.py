"""The ``phalanx`` command.

    phalanx run [FILE] [--set a.b=v ...] [--seed N] [--out DIR]   run a study (default: built in)
    phalanx grid FILE [--set k=v ...] [--only-defenses a,b] [--jobs N] [--fresh] [--out DIR]
                                                                  attack x defense grid, cached
    phalanx plugins                                               list registered plug-ins
    phalanx schema                                                the scenario reference (Markdown)
    phalanx audit LEDGER [--log-key VKEY | --policy FILE] [--all] [--replay [--private DIR]]
                                                                  verify a ledger, every byte; re-run
                                                                  every aggregate with --replay
    phalanx trace LEDGER MODEL_HASH [--rounds N] [--summary]      the provenance of a model
    phalanx receipt export LEDGER INDEX [--out FILE]              an offline inclusion proof
    phalanx receipt verify FILE (--policy FILE | --log-key VKEY [--witness VKEY ...]) [--entry FILE]
    phalanx ledger keygen NAME [--cosigner] [--out FILE]          a log or witness key pair
    phalanx ledger info LEDGER                                    origin, key, size, checkpoints
    phalanx ledger bundle LEDGER INDEX [--out FILE]               entry + proofs + checkpoints for the
                                                                  browser verifier (JSON)
    phalanx dashboard DIR [--live] [--host H] [--port N]          the dashboard of a run, study or grid

A bad scenario file prints one line naming the field and the problem, and exits with code 2. A
ledger that fails its audit, or a receipt that does not verify, prints one line naming the first
failure and exits with code 1; unusable input (a bad key, a missing file) exits with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="phalanx",
    help="Phalanx: secure decentralized learning, and a range that pits attacks against defenses.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@app.command()
def run(
    file: Annotated[Optional[Path], typer.Argument(
        help="Scenario or study YAML file. Without it, the built-in default study runs.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a field for every run, e.g. --set train.lr=0.1 (repeatable).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the seed of every run.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder for metrics, summary and report.")] = Path("out"),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    engine: Annotated[Optional[str], typer.Option(
        help="Where local training runs: local, or ray (the scenario's ray section: workers, address).")] = None,
) -> None:
    """Run a study (or a single scenario) and write metrics, summary.json and report.html."""
    from phalanx.range.runner import RunError, run_study
    from phalanx.range.scenario import ScenarioError, load_study, parse_set

    try:
        overrides = parse_set(set_ or [])
        if engine is not None:
            overrides["engine"] = engine
        study, description, runs = load_study(file, overrides, seed)
    except ScenarioError as e:
        err.print(f"error: {e}", markup=False)
        raise typer.Exit(2) from None
    try:
        summary = run_study(study, description, runs, out, progress=progress)
    except ScenarioError as e:
        err.print(f"error: {e}", markup=False)
        raise typer.Exit(2) from None
    except RunError as e:
        err.print(f"error: {e}", markup=False)
        raise typer.Exit(1) from None
    for r in summary["runs"]:
        final = r["final"]
        acc = final.get("accuracy")
        err.print(f"{r['name']:<28} accuracy {acc if acc is None else f'{acc:.3f}'}  "
                  f"availability {final.get('availability', 0):.2f}", markup=False)
    err.print(f"report: {out / 'report.html'}", markup=False)


@app.command()
def grid(
    file: Annotated[Optional[Path], typer.Argument(
        help="Grid YAML file (format: phalanx.range.grid). Without it, the built-in default grid runs.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a field of the grid file, e.g. --set base.rounds=5, --set seeds=[0], "
                      "--set defenses.krum.declared_f=2 (repeatable).")] = None,
    only_topologies: Annotated[Optional[list[str]], typer.Option(
        help="Keep only these topology labels (comma-separated or repeated).")] = None,
    only_defenses: Annotated[Optional[list[str]], typer.Option(
        help="Keep only these defense labels (comma-separated or repeated).")] = None,
    only_attacks: Annotated[Optional[list[str]], typer.Option(
        help="Keep only these attack labels (comma-separated or repeated).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder: cells/ cache, grid.json, grid.md, report.html.")
                   ] = Path("out/grid"),
    jobs: Annotated[Optional[int], typer.Option(
        min=1, help="Cells run at once, each in its own process (default: one per core).")] = None,
    fresh: Annotated[bool, typer.Option(help="Ignore cached cells and run every cell again.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run an attack x defense x topology x seed grid (cached) and report each defense's worst case."""
    from phalanx.range.grid import GridInterrupted, default_grid_path, load_grid, run_grid
    from phalanx.range.grid_report import print_tables
    from phalanx.range.scenario import ScenarioError, parse_set

    only = {axis: [label.strip() for item in (labels or []) for label in item.split(",") if label.strip()]
            for axis, labels in (("topologies", only_topologies), ("defenses", only_defenses),
                                 ("attacks", only_attacks))}
    try:
        spec = load_grid(file or default_grid_path(), parse_set(set_ or []), only)
        summary = run_grid(spec, out, jobs=jobs, fresh=fresh, progress=progress)
    except ScenarioError as e:
        err.print(f"error: {e}", markup=False)
        raise typer.Exit(2) from None
    except GridInterrupted as e:
        err.print(str(e), markup=False)
        raise typer.Exit(130) from None
    print_tables(summary, Console(highlight=False, soft_wrap=True))
    counts = summary["counts"]
    err.print(f"{counts['cells']} cells: {counts['cached']} cached, {counts['ran']} run, "
              f"{counts['failed']} failed", markup=False)
    for cell in summary["cells"]:
        if cell["status"] == "failed":
            err.print(f"failed: {cell['label']}: {cell['error']}", markup=False)
    err.print(f"report: {out / 'report.html'}", markup=False)
    if counts["failed"]:
        raise typer.Exit(1)


@app.command()
def eclipse(
    out: Path = typer.Option(Path("out/eclipse"), "--out", help="Where eclipse.md, eclipse.json and eclipse.png go."),
    rounds: int = typer.Option(30, help="Rounds of sampling."),
    seeds: int = typer.Option(3, help="Seeds 0..N-1 averaged."),
) -> None:
    """The eclipse attack: the attacker's share of a victim's view per sampler, forks accepted, stalls noticed.
    The same study runs in the range: src/phalanx/range/studies/eclipse.yaml."""
    import pydantic

    from phalanx.network.config import one_line
    from phalanx.range.eclipse import markdown, run as run_eclipse, write
    from phalanx.range.scenario import EclipseSpec

    try:
        spec = EclipseSpec(rounds=rounds, seeds=list(range(seeds)))
    except pydantic.ValidationError as e:
        raise _fail(f"error: {one_line(e, 'eclipse')}", 2) from None
    result = run_eclipse(spec)
    write(result, out)
    typer.echo(markdown(result) + f"written: {out}/eclipse.md, eclipse.json, eclipse.png")


@app.command()
def plugins() -> None:
    """List every registered plug-in (datasets, models, aggregators, attacks, ...)."""
    from phalanx.range.scenario import plugin_slots

    for path, registry in plugin_slots():
        typer.echo(f"{path} ({registry.kind}):")
        for name in registry:
            typer.echo(f"  {name:<16} {registry.describe(name)}")


@app.command()
def schema() -> None:
    """Print the scenario file reference (Markdown), generated from the schema."""
    from phalanx.range.reference import scenario_reference

    typer.echo(scenario_reference())


# ---------------------------------------------------------------------------- the ledger

receipt_app = typer.Typer(help="Offline receipts: C2SP tlog-proof inclusion proofs.", no_args_is_help=True)
ledger_app = typer.Typer(help="Ledger keys and summaries.", no_args_is_help=True)
app.add_typer(receipt_app, name="receipt")
app.add_typer(ledger_app, name="ledger")


def _fail(message: str, code: int) -> typer.Exit:
    err.print(message, markup=False)
    return typer.Exit(code)


def _trust(policy_file: Optional[Path], log_key: Optional[str], witnesses: list[str], quorum: Optional[int]):
    """The trusted keys, from a C2SP tlog-policy file or from vkeys on the command line."""
    from phalanx.ledger.note import NoteError, parse_vkey
    from phalanx.ledger.policy import Group, Policy, PolicyError

    try:
        if policy_file is not None:
            return Policy.parse(policy_file.read_text())
        if log_key is None:
            return None
        logs = [parse_vkey(log_key)]
        if quorum is None:
            return Policy.byzantine(logs, witnesses)
        ws = {v.name: v for v in map(parse_vkey, witnesses)}
        if not 0 <= quorum <= len(ws):
            raise PolicyError(f"--quorum {quorum} is not in 0..{len(ws)} (the witnesses given)")
        if quorum == 0:
            return Policy(logs, ws)
        return Policy(logs, ws, {"witnesses": Group("witnesses", quorum, tuple(ws))}, "witnesses")
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(f"error: {policy_file}: {e}", 2) from None
    except (NoteError, PolicyError) as e:
        raise _fail(f"error: {e}", 2) from None


LogKeyOption = Annotated[Optional[str], typer.Option(
    "--log-key", help="The log's vkey (name+id+key) to expect; pins the trust the audit starts from.")]
PolicyOption = Annotated[Optional[Path], typer.Option(
    "--policy", help="A C2SP tlog-policy file: the trusted log, witnesses and quorum.")]
WitnessOption = Annotated[Optional[list[str]], typer.Option(
    "--witness", help="A witness's cosignature vkey (repeatable); with --log-key.")]
QuorumOption = Annotated[Optional[int], typer.Option(
    "--quorum", help="Cosignatures needed from the --witness keys (default: 2f+1 of 3f+1).")]


@app.command()
def audit(
    ledger: Annotated[str, typer.Argument(help="The ledger: a SQLite file or a postgresql:// URL.")],
    log_key: LogKeyOption = None,
    policy: PolicyOption = None,
    witness: WitnessOption = None,
    quorum: QuorumOption = None,
    all_: Annotated[bool, typer.Option("--all", help="List every failure, not only the first.")] = False,
    replay: Annotated[bool, typer.Option(
        "--replay", help="Also re-run every aggregate from what the protocol revealed (the kept updates).")
    ] = False,
    private: Annotated[Optional[Path], typer.Option(
        "--private", help="The run's salts and kept updates (default: ledger-private beside it).")] = None,
) -> None:
    """Verify every signature, hash, proof and rule of a ledger; exit 1 with the first failure.

    The structural checks are the ledger's own; the engine adds its checks (no update from a
    quarantined node, governance quorums, rollbacks naming the model the log held, a committee's
    round certificates and the aggregates they certify) and, with
    --replay, re-runs each round's aggregation and checks its result hash.
    """
    from phalanx.engine.provenance.checks import EngineChecks
    from phalanx.ledger.audit import audit as run_audit

    trust = _trust(policy, log_key, witness or [], quorum)
    engine = EngineChecks(origin=_origin(ledger))
    try:
        report = run_audit(ledger, policy=trust, checks=engine.checks(), stop_at_first=not all_)
        if report.ok:
            report.findings += [_finding("rollback", f) for f in engine.unstored_checkpoints(_sizes(ledger))]
    except Exception as e:  # never a traceback: the audit reports what it found, this is a bug
        raise _fail(f"error: internal error while auditing (please report): {type(e).__name__}: {e}", 3) from None
    if all_:
        for finding in report.findings[1:]:
            err.print(f"  also: {finding}", markup=False)
    if not report.ok:
        raise _fail(report.summary(), 1)
    typer.echo(report.summary())
    for line in engine.reverted():
        typer.echo(line)
    if replay:
        _replay(ledger, private, all_)


def _finding(where: str, what: str):
    from phalanx.ledger.audit import Finding

    return Finding(where, what)


def _origin(ledger: str) -> str | None:
    """The log's origin, or None if it cannot be opened (the audit then says why)."""
    from phalanx.ledger.log import Ledger

    try:
        with Ledger.open(ledger, readonly=True) as opened:
            return opened.origin
    except Exception:  # a missing or damaged ledger: the audit reports it
        return None


def _sizes(ledger: str) -> set[int]:
    from phalanx.ledger.log import Ledger

    with Ledger.open(ledger, readonly=True) as opened:
        return {c.checkpoint.size for c in opened.checkpoints()}


def _replay(ledger: str, private: Optional[Path], all_: bool) -> None:
    from phalanx.engine.provenance import PRIVATE_DIR
    from phalanx.engine.provenance.replay import replay as run_replay

    if private is None:
        if "://" in ledger:
            raise _fail("error: --replay of a database by URL needs --private DIR (its ledger-private)", 2)
        private = Path(ledger).parent / PRIVATE_DIR
    if not private.is_dir():
        raise _fail(f"error: {private}: no such folder; --replay needs the run's kept updates and salts "
                    "(the scenario's ledger.keep_updates)", 2)
    try:
        report = run_replay(ledger, private, stop_at_first=not all_)
    except Exception as e:  # never a traceback
        raise _fail(f"error: internal error while replaying (please report): {type(e).__name__}: {e}",
                    3) from None
    if all_:
        for finding in report.findings[1:]:
            err.print(f"  also: {finding}", markup=False)
    if not report.ok:
        raise _fail(report.summary(), 1)
    typer.echo(f"{report.summary()} ({report.seconds:.1f} s)")


@app.command()
def trace(
    ledger: Annotated[str, typer.Argument(help="The ledger: a SQLite file or a postgresql:// URL.")],
    model: Annotated[str, typer.Argument(help="The model's SHA-256 in hex (a unique prefix of 8 or more).")],
    rounds: Annotated[Optional[int], typer.Option(min=1, help="Show only the latest N rounds.")] = None,
    summary: Annotated[bool, typer.Option(help="One line per aggregate, without its updates.")] = False,
) -> None:
    """Print a model's provenance: rounds, the nodes and datasets behind each update, rejections."""
    from phalanx.ledger.log import Ledger
    from phalanx.ledger.storage import StorageError
    from phalanx.ledger.trace import LedgerIndex, TraceError, format_trace
    from phalanx.ledger.trace import trace as run_trace

    try:
        with Ledger.open(ledger, readonly=True) as opened:
            index = LedgerIndex.build(opened.entries())
    except (StorageError, ValueError) as e:
        raise _fail(f"error: {e}", 2) from None
    wanted = model.strip().lower()
    if len(wanted) < 8 or any(c not in "0123456789abcdef" for c in wanted) or len(wanted) > 64:
        raise _fail(f"error: model {model[:80]!r}: give its SHA-256 in hex (at least 8 digits)", 2)
    found = sorted({r.body.result for r in index.records if r.body.result.hex().startswith(wanted)})
    if len(found) != 1:
        what = "no model in this log matches" if not found else f"{len(found)} models in this log match"
        raise _fail(f"error: {what} {wanted}", 1)
    try:
        typer.echo(format_trace(run_trace(index, found[0]), rounds=rounds, updates=not summary), nl=False)
    except TraceError as e:
        raise _fail(f"error: {e}", 1) from None


@receipt_app.command("export")
def receipt_export(
    ledger: Annotated[str, typer.Argument(help="The ledger: a SQLite file or a postgresql:// URL.")],
    index: Annotated[int, typer.Argument(min=0, help="The entry's index in the log.")],
    out: Annotated[Optional[Path], typer.Option(help="Write the receipt here (default: stdout).")] = None,
    checkpoint: Annotated[Optional[int], typer.Option(
        min=0, help="Prove against this stored checkpoint (default: the latest that covers the entry).")] = None,
) -> None:
    """Write an offline receipt (c2sp.org/tlog-proof@v1) proving that an entry is in the log."""
    from phalanx.ledger.log import Ledger
    from phalanx.ledger.storage import StorageError

    try:
        with Ledger.open(ledger, readonly=True) as opened:
            text = opened.receipt(index, checkpoint=checkpoint).format()
    except (StorageError, IndexError, ValueError) as e:
        raise _fail(f"error: {e}", 2) from None
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        err.print(f"receipt for entry {index}: {out}", markup=False)


@receipt_app.command("verify")
def receipt_verify(
    receipt: Annotated[Path, typer.Argument(help="A receipt file (c2sp.org/tlog-proof@v1).")],
    log_key: LogKeyOption = None,
    policy: PolicyOption = None,
    witness: WitnessOption = None,
    quorum: QuorumOption = None,
    entry: Annotated[Optional[Path], typer.Option(
        help="The entry's encoding, when the receipt does not carry it (or to check it is that one).")] = None,
) -> None:
    """Check a receipt offline: the log's signature, the witnesses' quorum, the inclusion proof."""
    from phalanx.ledger.receipt import ReceiptError, verify_receipt

    trust = _trust(policy, log_key, witness or [], quorum)
    if trust is None:
        raise _fail("error: say whom to trust: --policy FILE, or --log-key VKEY (with --witness VKEY ...)", 2)
    try:
        text = receipt.read_bytes()
        data = entry.read_bytes() if entry is not None else None
    except OSError as e:
        raise _fail(f"error: {e}", 2) from None
    try:
        result = verify_receipt(text, trust, entry=data)
    except ReceiptError as e:
        raise _fail(f"receipt does not verify: {e}", 1) from None
    typer.echo(f"ok: {result.entry.type} from node "
               f"{result.entry.node_id.hex()[:16]}... is in {result.checkpoint.origin} at size "
               f"{result.checkpoint.size}, cosigned by {', '.join(result.cosigners) or 'no witness'}")


@ledger_app.command("keygen")
def ledger_keygen(
    name: Annotated[str, typer.Argument(help="The key's name: a log's origin, or a witness's name.")],
    cosigner: Annotated[bool, typer.Option(help="A witness key (cosignature/v1) instead of a log key.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Write the private key here (mode 600).")] = None,
) -> None:
    """Make an Ed25519 key pair; print the vkey (public) and write or print the private key."""
    import os

    from phalanx.core.keys import SigningKey
    from phalanx.ledger.note import SIG_COSIGNATURE, SIG_ED25519, NoteError, Signer

    try:
        signer = Signer(name, SigningKey.generate(), SIG_COSIGNATURE if cosigner else SIG_ED25519)
    except NoteError as e:
        raise _fail(f"error: {e}", 2) from None
    if out is None:
        typer.echo(signer.private_key())
    else:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(signer.private_key() + "\n")
    typer.echo(signer.vkey)


@ledger_app.command("info")
def ledger_info(
    ledger: Annotated[str, typer.Argument(help="The ledger: a SQLite file or a postgresql:// URL.")],
) -> None:
    """Print a ledger's origin, log key, size, checkpoints and policy (without auditing it)."""
    from phalanx.ledger.log import Ledger
    from phalanx.ledger.storage import StorageError

    try:
        with Ledger.open(ledger, readonly=True) as opened:
            latest = opened.latest_checkpoint()
            typer.echo(f"origin      {opened.origin}\nlog key     {opened.vkey}\nentries     {opened.size}\n"
                       f"checkpoints {opened.checkpoint_count}"
                       + (f" (latest at size {latest.checkpoint.size}, "
                          f"{'final' if opened.policy.is_final(latest.format()) else 'not final'})" if latest else ""))
            typer.echo("policy:\n" + "".join(f"  {line}\n" for line in opened.policy.format().splitlines()), nl=False)
    except (StorageError, ValueError) as e:
        raise _fail(f"error: {e}", 2) from None


node_app = typer.Typer(help="A deployed node: its identity and its process.", no_args_is_help=True)
app.add_typer(node_app, name="node")


@node_app.command("init")
def node_init(
    folder: Annotated[Path, typer.Argument(help="The node's folder (created).")],
    name: Annotated[Optional[str], typer.Option(help="The node's name (default: the folder's).")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8470,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Make a node's identity (an Ed25519 key whose SHA-256 is its node ID; log, witness and X25519
    keys) and its configuration, DIR/node.yaml. An existing identity is never overwritten."""
    from phalanx.network.config import ConfigError
    from phalanx.range.network import init_node

    try:
        keys = init_node(folder, name or folder.name, port, host)
    except ConfigError as e:
        raise _fail(f"error: {e}", 2) from None
    typer.echo(f"node ID   {keys.node.hex()}\nkey       {keys.identity.public.raw.hex()}\n"
               f"x25519    {keys.xk.hex()}\nlog key   {keys.log.public.raw.hex()}\n"
               f"witness   {keys.witness.public.raw.hex()}\nconfig    {folder / 'node.yaml'} (add the genesis)")


@node_app.command("start")
def node_start(folder: Annotated[Path, typer.Argument(help="The node's folder (phalanx node init).")]) -> None:
    """Run the node: serve its API and drive its rounds until stopped (exit 3 if it halts)."""
    from phalanx.network.config import ConfigError
    from phalanx.range.network import start_node

    try:
        code = start_node(folder)
    except ConfigError as e:
        raise _fail(f"error: {e}", 2) from None
    raise typer.Exit(code)


def _sampling(sampler: str, view: Optional[int], mode: str) -> dict | None:
    """``phalanx up``'s --sampler and --view as a node's ``sampling`` config, or a one-line error."""
    from phalanx.network.sampling import SAMPLERS

    if sampler == "all":
        if view is not None:
            raise _fail("error: --view needs --sampler (basalt, brahms or push_pull)", 2)
        return None
    if sampler not in SAMPLERS:
        raise _fail(f"error: --sampler {sampler!r}: all, {', '.join(sorted(SAMPLERS))}", 2)
    if mode != "gossip":
        raise _fail(f"error: --sampler {sampler}: peer sampling is for gossip, not --mode {mode}", 2)
    return {"name": sampler, "view": 8 if view is None else view}


@app.command()
def up(
    nodes: Annotated[int, typer.Option(min=2, max=64, help="Node processes that train.")] = 8,
    malicious: Annotated[int, typer.Option(min=0, help="How many of them attack.")] = 0,
    attack: Annotated[Optional[str], typer.Option(help="Their update attack (e.g. alie, ipm, sign_flip).")] = None,
    mode: Annotated[str, typer.Option(help="gossip (no coordinator), committee (validators certify each round's "
                                           "aggregate, no coordinator) or star (one server, the baseline).")
                    ] = "gossip",
    rounds: Annotated[Optional[int], typer.Option(min=1, help="Rounds (default: the task's).")] = None,
    task: Annotated[Optional[Path], typer.Option(help="A scenario file: data, model, training, defense "
                                                 "(default: the built-in network task).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a task field, e.g. --set train.lr=0.1.")
                    ] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="Round timeout in seconds.")] = 20.0,
    encryption: Annotated[str, typer.Option(help="on, off, or auto (encrypt off loopback).")] = "auto",
    out: Annotated[Path, typer.Option(help="Output folder: nodes, metrics, summary, report.")] = Path("out/network"),
    keep: Annotated[bool, typer.Option(help="Leave the nodes running afterwards (phalanx down stops them).")] = False,
    sampler: Annotated[str, typer.Option(help="Gossip: all (every live peer), or a peer sampler: basalt, brahms, "
                                         "push_pull.")] = "all",
    view: Annotated[Optional[int], typer.Option(min=1, max=1000, help="Slots in each node's view (with --sampler; "
                                                "default 8).")] = None,
) -> None:
    """Start a local network of node processes on loopback, let it run, and write the same metrics,
    summary and report as a simulated run; every node's log is audited. Ctrl-C stops every node."""
    from phalanx.network.config import ConfigError
    from phalanx.range.launcher import up as run_up
    from phalanx.range.scenario import ScenarioError, load_study, parse_set

    if mode not in ("gossip", "star", "committee"):
        raise _fail(f"error: --mode {mode!r}: gossip, committee or star", 2)
    if encryption not in ("on", "off", "auto"):
        raise _fail(f"error: --encryption {encryption!r}: on, off or auto", 2)
    sampling = _sampling(sampler, view, mode)
    overrides = parse_set(set_ or [])
    overrides.setdefault("data", {})["nodes"] = nodes
    overrides.setdefault("adversary", {})["malicious"] = malicious
    if attack is not None:
        overrides["adversary"]["update_attack"] = attack
    overrides.setdefault("topology", {})["name"] = mode
    if mode == "gossip":  # every node talks to every live peer it knows (phalanx.network.peers.AllPeers)
        overrides["topology"]["graph"] = "complete"
    if rounds is not None:
        overrides["rounds"] = rounds
    try:
        from phalanx.range.scenario import network_task_path

        _, _, runs = load_study(task or network_task_path(), overrides)
        if len(runs) != 1:
            raise ScenarioError(f"{task}: a network runs one task; this file has {len(runs)} runs")
        if malicious and runs[0].adversary.update_attack is None:
            raise ScenarioError("--malicious needs --attack (or adversary.update_attack in the task)")
        summary = run_up(runs[0], out, mode=mode, timeout_s=timeout, encryption=encryption, keep=keep,
                         progress=lambda line: err.print(line, markup=False), sampling=sampling)
    except (ScenarioError, ConfigError) as e:
        raise _fail(f"error: {e}", 2) from None
    except KeyboardInterrupt:
        raise _fail("interrupted: every node process was stopped", 130) from None
    run = summary["runs"][0]
    final = run["final"]
    acc = final.get("accuracy")
    audits = run["network"]["audit"]
    err.print(f"{run['name']}: {len(final) and final.get('round')} rounds, accuracy "
              f"{'—' if acc is None else f'{acc:.3f}'}; logs audited: "
              f"{sum(a['ok'] for a in audits)}/{len(audits)} pass", markup=False)
    for a in audits:
        if not a["ok"]:
            err.print(f"  {a['node']}: {a['summary']}", markup=False)
    err.print(f"report: {out / 'report.html'}", markup=False)
    if not all(a["ok"] for a in audits):
        raise typer.Exit(1)


@app.command()
def status(out: Annotated[Path, typer.Option(help="The network's folder (phalanx up --out).")] = Path("out/network")
           ) -> None:
    """Show the live network: each node's round, log, peers, accuracy, and whether it is up."""
    from phalanx.network.config import ConfigError
    from phalanx.range.launcher import status as network_status

    try:
        rows = network_status(out)
    except ConfigError as e:
        raise _fail(f"error: {e}", 2) from None
    typer.echo(f"{'node':<10} {'up':<4} {'round':>9} {'log':>6} {'ckpt':>5} {'peers':>5} {'accuracy':>8}  note")
    for r in rows:
        if not r["up"]:
            typer.echo(f"{r['name']:<10} {'no':<4}")
            continue
        acc = "—" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        note = ("malicious " if r["malicious"] else "") + (f"halted: {r['halted']}" if r["halted"] else
                                                           ("done" if r["done"] else ""))
        note += f" evidence: {r['evidence']}" if r["evidence"] else ""
        typer.echo(f"{r['name']:<10} {'yes':<4} {str(r['round']) + '/' + str(r['rounds']):>9} {r['log']:>6} "
                   f"{r['checkpoints']:>5} {r['peers_up']:>5} {acc:>8}  {note}")


@app.command()
def propose(
    action: Annotated[str, typer.Argument(help="admit, evict, quarantine, release, min_version or rollback.")],
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", help="A parameter, e.g. --param software=0.2.0 --param at=12 (values read as YAML).")] = None,
    deadline: Annotated[int, typer.Option(min=1, help="The last round in which votes count.")] = 1_000_000,
    voters: Annotated[Optional[int], typer.Option(min=1, help="How many validators vote yes (default: all).")] = None,
    out: Annotated[Path, typer.Option(help="The network's folder (phalanx up --out).")] = Path("out/network"),
) -> None:
    """Propose a governance action to a local network and vote on it as its validators (their keys
    are in OUT/nodes): the proposal and the votes go into every live node's log."""
    from phalanx.network.config import ConfigError
    from phalanx.range.launcher import govern
    from phalanx.range.scenario import ScenarioError, parse_set

    try:
        params = parse_set(param or [])
        if any(isinstance(v, (dict, list)) for v in params.values()):
            raise ScenarioError("--param: values are scalars (a dotted key is not a parameter)")
        for item in param or []:  # node IDs, evidence lists and versions stay text, as written
            key, _, raw = item.partition("=")
            if key.strip() in ("node", "evidence", "software"):
                params[key.strip()] = raw.strip()
        indices = govern(out, action, params, deadline=deadline, voters=voters)
    except (ScenarioError, ConfigError) as e:
        raise _fail(f"error: {e}", 2) from None
    for name, index in indices.items():
        typer.echo(f"{name:<10} proposal at entry {index}")
    if not indices:
        raise _fail("error: no node of the network answered", 1)


@app.command()
def down(out: Annotated[Path, typer.Option(help="The network's folder (phalanx up --out).")] = Path("out/network")
         ) -> None:
    """Stop every node process of the network in OUT (SIGTERM, then SIGKILL after 10 s)."""
    from phalanx.network.config import ConfigError
    from phalanx.range.launcher import down as network_down

    try:
        n = network_down(out)
    except ConfigError as e:
        raise _fail(f"error: {e}", 2) from None
    typer.echo(f"stopped {n} node process(es)")


@ledger_app.command("bundle")
def ledger_bundle(
    ledger: Annotated[Path, typer.Argument(help="The ledger file (ledger.db).")],
    index: Annotated[int, typer.Argument(min=0, help="The entry's index in the log.")],
    out: Annotated[Optional[Path], typer.Option(help="Write the bundle here (default: stdout).")] = None,
) -> None:
    """Write an entry's proof bundle (phalanx.ledger/bundle/v1) for the static verifier page.

    The bundle is read from the file as it is, unchecked: the verifier page checks it.
    """
    import json

    from phalanx.dashboard.ledger_view import LedgerViewError, bundle_file

    try:
        text = json.dumps(bundle_file(ledger, index), indent=1) + "\n"
    except LedgerViewError as e:
        raise _fail(f"error: {e}", 2) from None
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        err.print(f"bundle for entry {index}: {out}", markup=False)


@app.command()
def dashboard(
    folder: Annotated[Path, typer.Argument(help="What phalanx run or phalanx grid wrote (or one run's folder).")],
    live: Annotated[bool, typer.Option(
        help="Follow a study still running: new rounds appear as they finish.")] = False,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 8765,
) -> None:
    """Serve the dashboard of a finished (or, with --live, running) study, run or grid."""
    try:
        import uvicorn

        from phalanx.dashboard.app import create_app
        from phalanx.dashboard.source import SourceError
    except ImportError as e:
        raise _fail(f"error: the dashboard needs FastAPI and uvicorn ({e}); pip install 'phalanx[dashboard]'", 2) from None
    try:
        web = create_app(folder, live=live)
    except SourceError as e:
        raise _fail(f"error: {e}", 2) from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"warning: listening on {host}: anyone who can reach it can read this run", markup=False)
    err.print(f"dashboard of {folder} on http://{host}:{port}/ (Ctrl-C to stop)", markup=False)
    uvicorn.run(web, host=host, port=port, log_level="warning")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
