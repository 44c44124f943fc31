"""A node's files: its keys, its configuration and the network's genesis, each validated.

``phalanx node init DIR`` writes::

    DIR/node.keys     the node's secrets (mode 0600): its Ed25519 identity key (the node ID is
                      SHA-256 of the key it first registered with, and survives rotation), its
                      log's checkpoint key, its witness (cosignature/v1) key, its X25519 key
    DIR/node.yaml     its configuration (:class:`NodeConfig`)

and the network's genesis (:class:`Genesis`, ``genesis.yaml``) names the members, their keys and
addresses, the round clock, the admission policy and the learning task (a scenario of the range,
kept here as plain data). Errors are one line naming the file, the field, the value and what is
allowed, as for scenario files; nothing here raises a traceback on bad input.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import pydantic
import yaml
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from phalanx.core.keys import SigningKey, node_id
from phalanx.ledger.note import SIG_COSIGNATURE, SIG_ED25519, Signer, Verifier

KEYS_FILE = "node.keys"
CONFIG_FILE = "node.yaml"
GENESIS_FILE = "genesis.yaml"
KEYS_FORMAT = "phalanx.node-keys/v1"
PROTOCOL = 1

Hex32 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="32 bytes in lowercase hex")]
Name = Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9_.-]+$")]


class ConfigError(ValueError):
    """A node file that cannot be used; ``str()`` is one line naming the file and field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def one_line(error: pydantic.ValidationError, source: str) -> str:
    """The first validation error as ``source: path: problem (got value)``."""
    first = error.errors(include_url=False)[0]
    path = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: {path}: unknown key"
    if first["type"] == "missing":
        return f"{source}: {path}: required field is missing"
    msg = first["msg"].removeprefix("Value error, ")
    got = repr(first.get("input"))
    return f"{source}: {path}: {msg[0].lower() + msg[1:]} (got {got[:80]})"


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    return data


def _load(model: type[BaseModel], path: Path) -> Any:
    try:
        return model.model_validate(read_yaml(path))
    except pydantic.ValidationError as e:
        raise ConfigError(one_line(e, str(path))) from None


# ---------------------------------------------------------------------------- keys

class NodeKeys:
    """A node's secrets. ``identity`` may rotate; ``node`` stays the ID of its first key."""

    def __init__(self, identity: SigningKey, node: bytes, log: SigningKey, witness: SigningKey,
                 xkey: X25519PrivateKey):
        self.identity, self.node, self.log, self.witness, self.xkey = identity, node, log, witness, xkey

    @classmethod
    def generate(cls) -> NodeKeys:
        identity = SigningKey.generate()
        return cls(identity, identity.node_id, SigningKey.generate(), SigningKey.generate(),
                   X25519PrivateKey.generate())

    @property
    def xk(self) -> bytes:
        return self.xkey.public_key().public_bytes_raw()

    def log_signer(self, origin: str) -> Signer:
        return Signer(origin, self.log)

    def witness_signer(self, name: str) -> Signer:
        return Signer(name, self.witness, SIG_COSIGNATURE)

    def write(self, folder: Path) -> Path:
        path = folder / KEYS_FILE
        data = {"format": KEYS_FORMAT, "node": self.node.hex(), "identity": self.identity.seed.hex(),
                "log": self.log.seed.hex(), "witness": self.witness.seed.hex(),
                "x25519": self.xkey.private_bytes_raw().hex()}
        tmp = folder / (KEYS_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, folder: Path) -> NodeKeys:
        path = folder / KEYS_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file (run phalanx node init {folder})") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable: {e}") from None
        if not isinstance(raw, dict) or raw.get("format") != KEYS_FORMAT:
            raise ConfigError(f"{path}: not a {KEYS_FORMAT} file")
        try:
            seeds = {k: bytes.fromhex(raw[k]) for k in ("node", "identity", "log", "witness", "x25519")}
            return cls(SigningKey(seeds["identity"]), seeds["node"], SigningKey(seeds["log"]),
                       SigningKey(seeds["witness"]), X25519PrivateKey.from_private_bytes(seeds["x25519"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: a key is missing or malformed ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------- the genesis

class Member(Strict):
    """A founding member: who it is, where it listens, what it does."""

    name: Name
    node: Hex32 = Field(description="node ID: SHA-256 of key")
    key: Hex32 = Field(description="the Ed25519 key it registers with")
    xk: Hex32 = Field(description="its X25519 key (encryption)")
    url: Annotated[str, Field(max_length=200)] = Field(description="http://host:port it serves on")
    log: Hex32 = Field(description="its log's checkpoint key (Ed25519 public key)")
    witness: Hex32 = Field(description="its witness's cosignature key (Ed25519 public key)")
    roles: list[Literal["trainer", "aggregator", "validator", "witness"]] = ["trainer", "witness"]
    weight: Annotated[float, Field(gt=0, le=1e9)] = Field(1.0, description="voting weight if a validator")
    shard: Annotated[int, Field(ge=-1, le=100_000)] = Field(-1, description="its data shard in the task (-1: none)")

    @model_validator(mode="after")
    def _id_matches_key(self):
        if hashlib.sha256(bytes.fromhex(self.key)).hexdigest() != self.node:
            raise ValueError(f"node {self.node[:16]}... is not SHA-256 of key {self.key[:16]}...")
        check_url(self.url)
        return self


class AdmissionSpec(Strict):
    name: Literal["open", "proof_of_work", "stake", "vouching", "approval"] = "open"
    bits: Annotated[int, Field(ge=0, le=40)] = Field(12, description="proof_of_work: leading zero bits")
    stake: Annotated[float, Field(gt=0, le=1e18)] = Field(100.0, description="stake: the least stake")
    vouches: Annotated[int, Field(ge=1, le=1000)] = Field(2, description="vouching: members who must vouch")


class Genesis(Strict):
    network: Name = Field(description="the network's name; with the genesis hash it names every log")
    protocol: Annotated[int, Field(ge=1, le=1000)] = PROTOCOL
    software: Annotated[str, Field(pattern=r"^\d{1,9}(\.\d{1,9}){0,3}$")] = Field(
        "0.1.0", description="the minimum software version from round 1")
    mode: Literal["gossip", "star", "committee"] = "gossip"
    rounds: Annotated[int, Field(ge=0, le=10_000_000)] = Field(10, description="rounds to run (0: forever)")
    round_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        20.0, description="a node waits at most this long for a round's messages")
    admission: AdmissionSpec = AdmissionSpec()
    members: Annotated[list[Member], Field(min_length=1, max_length=10_000)]
    task: dict[str, Any] = Field(default_factory=dict, description="the learning task: a range scenario")

    @model_validator(mode="after")
    def _check(self):
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError("two members share a name")
        if len({m.node for m in self.members}) != len(self.members):
            raise ValueError("two members share a node ID")
        if not any("validator" in m.roles for m in self.members):
            raise ValueError("no member is a validator")
        if self.mode == "star" and sum("aggregator" in m.roles for m in self.members) != 1:
            raise ValueError("a star needs exactly one member with the role aggregator")
        return self

    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON of the genesis: what the fork ID starts from."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).digest()

    def member(self, node: bytes) -> Member | None:
        h = node.hex()
        return next((m for m in self.members if m.node == h), None)

    def origin(self, node: bytes) -> str:
        """The name of node ``node``'s log (its checkpoints' origin, and its key's name)."""
        return f"phalanx.net/{self.network}/{node.hex()[:32]}"

    def witness_name(self, node: bytes) -> str:
        return f"phalanx.witness/{self.network}/{node.hex()[:32]}"

    def log_verifier(self, m: Member) -> Verifier:
        return Verifier(self.origin(bytes.fromhex(m.node)), SIG_ED25519, bytes.fromhex(m.log))

    def witness_verifier(self, m: Member) -> Verifier:
        return Verifier(self.witness_name(bytes.fromhex(m.node)), SIG_COSIGNATURE, bytes.fromhex(m.witness))

    def validators(self) -> dict[bytes, float]:
        return {bytes.fromhex(m.node): m.weight for m in self.members if "validator" in m.roles}

    def server(self) -> Member | None:
        return next((m for m in self.members if "aggregator" in m.roles), None)


def load_genesis(path: Path) -> Genesis:
    return _load(Genesis, path)


def write_yaml(path: Path, model: BaseModel) -> None:
    path.write_text(yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False))


# ---------------------------------------------------------------------------- the node's configuration

def check_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.port is None:
        raise ValueError(f"url {url!r} is not http(s)://host:port")
    return url


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host == "localhost" or bool(re.fullmatch(r"127\.\d{1,3}\.\d{1,3}\.\d{1,3}", host)) or host == "::1"


class SamplingSpec(Strict):
    """Which peers a gossip round talks to (:mod:`phalanx.network.view`)."""

    name: Literal["basalt", "brahms", "push_pull"] = Field(
        "basalt", description="the peer sampler (phalanx.network.sampling.SAMPLERS)")
    view: Annotated[int, Field(ge=1, le=1000)] = Field(8, description="slots in the view: at most this many peers per round")


class NodeConfig(Strict):
    """``DIR/node.yaml``."""

    name: Name
    host: Annotated[str, Field(min_length=1, max_length=100)] = Field("127.0.0.1", description="address to listen on")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(description="port to listen on")
    url: Annotated[str, Field(max_length=200)] | None = Field(None, description="advertised URL (default http://host:port)")
    genesis: Annotated[str, Field(min_length=1, max_length=500)] = Field(GENESIS_FILE, description="the network's genesis file")
    ledger: Annotated[str, Field(min_length=1, max_length=500)] = Field(
        "ledger.db", description="this node's log: a SQLite file in DIR, or a postgresql:// URL")
    encryption: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: encrypt every message to a peer off loopback; on: always; off: never")
    max_body_mb: Annotated[float, Field(gt=0, le=4096)] = Field(64.0, description="largest message body accepted")
    window_s: Annotated[float, Field(ge=1, le=3600)] = Field(60.0, description="accepted timestamp skew; nonces kept as long")
    keep_updates: bool = Field(True, description="keep every update's bytes and salt for the audit's replay (off: hashes only)")
    attack: dict[str, Any] | None = Field(None, description="malicious node (the range): {name: alie, ...}")
    software: Annotated[str, Field(pattern=r"^\d{1,9}(\.\d{1,9}){0,3}$")] | None = Field(
        None, description="tests only: claim this software version instead of the installed one")
    server_behaviour: Literal["honest", "split_view"] = Field(
        "honest", description="tests only, star server: split_view sends half the nodes another model")
    committee_fault: Literal["none", "censor", "equivocate", "wrong_hash"] = Field(
        "none", description="tests only, a committee validator: as sequencer, censor drops one update it "
                            "promised and equivocate signs two proposals and two checkpoints; wrong_hash "
                            "signs a wrong aggregate digest in every proposal, echo and vote")
    admission_evidence: Annotated[str, Field(pattern=r"^[0-9a-f]{0,4096}$")] = Field(
        "", description="admission evidence (hex), for a node that joins after genesis")
    peers: list[Annotated[str, Field(max_length=300)]] = Field(
        [], description="extra bootstrap peers, each url#node#xk (hex), for a node not in the genesis")
    sampling: SamplingSpec | None = Field(
        None, description="gossip: talk to a sampled view, e.g. {name: basalt, view: 4} (null: every live peer)")

    @field_validator("url")
    @classmethod
    def _url(cls, v):
        return None if v is None else check_url(v)

    @property
    def advertised(self) -> str:
        return self.url or f"http://{self.host}:{self.port}"


def load_config(folder: Path) -> NodeConfig:
    return _load(NodeConfig, folder / CONFIG_FILE)


def node_hex(key: SigningKey) -> str:
    return node_id(key.public.raw).hex()
