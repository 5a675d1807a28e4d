"""The model bundle contract: one directory per model version, verified on every load.

Layout::

    <models_dir>/<name>/<version>/model.onnx    scoring graph (features -> score, feature_errors)
    <models_dir>/<name>/<version>/config.json   manifest (features, threshold, lineage, sha256s)
    <models_dir>/<name>/champion.json           which version serves; replaced atomically

A version directory is staged under a hidden name and renamed into place in one step, so a reader
never sees a half-written bundle, and versions are immutable once published.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ds_serving import jsonio
from ds_serving.atomic import atomic_write_text, current_umask, fsync_directory
from ds_serving.groups import FeatureGroupError, FeatureGroups
from ds_serving.policy import ENTITIES_KEY, PolicyError, ScoringPolicy

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
ENGINE_FILE = "model.plan"
MANIFEST_FILE = "config.json"
CHAMPION_FILE = "champion.json"
INPUT_NAME = "features"
OUTPUT_NAMES = ("score", "feature_errors")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class BundleError(ValueError):
    """A bundle is missing, corrupt or does not match its manifest; the message says which."""


def _check_name(kind: str, value: str) -> str:
    if not _NAME_RE.match(value):
        raise BundleError(
            f"invalid model {kind} {value!r}: use 1-128 letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What a serving process needs to know about a model, without model-specific code."""

    name: str
    version: str
    kind: str
    features: tuple[str, ...]
    threshold: float
    threshold_rule: dict[str, Any]
    files: dict[str, str]
    window: int | None = None
    created_at: str = ""
    alerting: dict[str, Any] = field(default_factory=dict)
    smoothing: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # named sets of features whose errors explanations add up (ds_serving.groups)
    feature_groups: dict[str, list[str]] = field(default_factory=dict)
    # threshold + smoothing + alerting parsed once: every caller decides through it
    policy: ScoringPolicy = field(init=False, repr=False, compare=False)
    groups: FeatureGroups = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            policy = ScoringPolicy.from_sections(self.threshold, self.threshold_rule,
                                                 self.smoothing, self.alerting)
        except PolicyError as exc:
            raise BundleError(
                f"model {self.name!r} v{self.version}: scoring policy: {exc}") from exc
        object.__setattr__(self, "policy", policy)
        try:
            groups = FeatureGroups.build(self.features, self.feature_groups)
        except FeatureGroupError as exc:
            raise BundleError(f"model {self.name!r} v{self.version}: {exc}") from exc
        object.__setattr__(self, "groups", groups)

    @property
    def n_features(self) -> int:
        return len(self.features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "created_at": self.created_at,
            "features": list(self.features),
            "window": self.window,
            "threshold": {"value": self.threshold, **self.threshold_rule},
            "alerting": self.alerting,
            "smoothing": self.smoothing,
            "lineage": self.lineage,
            "metrics": self.metrics,
            "extra": self.extra,
            "files": self.files,
            **({"feature_groups": self.feature_groups} if self.feature_groups else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> Manifest:
        def need(key: str, typ: type | tuple[type, ...]) -> Any:
            if key not in data:
                raise BundleError(f"{source}: manifest is missing required key {key!r}")
            if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
                raise BundleError(
                    f"{source}: manifest key {key!r} should be {typ}, "
                    f"got {type(data[key]).__name__}"
                )
            return data[key]

        def section(key: str) -> dict[str, Any]:
            value = data.get(key)
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise BundleError(f"{source}: manifest key {key!r} must be an object (or null), "
                                  f"got {type(value).__name__}")
            return dict(value)

        fmt = need("format_version", int)
        if fmt != FORMAT_VERSION:
            raise BundleError(
                f"{source}: bundle format_version {fmt} is not supported (this scorer reads "
                f"{FORMAT_VERSION}); re-export the model with a matching DataSentinel version"
            )
        threshold = dict(need("threshold", dict))
        check_threshold(threshold.get("value"), threshold.get(ENTITIES_KEY),
                        f"{source}: manifest threshold")
        features = need("features", list)
        if not features or not all(isinstance(f, str) for f in features):
            raise BundleError(f"{source}: manifest 'features' must be a non-empty list of names")
        window = data.get("window")
        if window is not None and (not isinstance(window, int) or window < 1):
            raise BundleError(f"{source}: manifest 'window' must be null or a positive integer")
        value = float(threshold.pop("value"))
        files = dict(need("files", dict))
        for rel, digest in files.items():
            # a listed file is a plain name inside the version directory: never a path that
            # reaches elsewhere (the loader hashes what the manifest names)
            if not isinstance(rel, str) or not _NAME_RE.match(rel):
                raise BundleError(
                    f"{source}: manifest 'files' entry {str(rel)[:80]!r} is not a plain file "
                    "name in the bundle directory (1-128 letters, digits, '_', '.', '-', "
                    "starting with a letter or digit)")
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise BundleError(f"{source}: manifest 'files' entry {rel!r} must map to a "
                                  "sha256 hex digest")
        return cls(
            name=need("name", str),
            version=need("version", str),
            kind=need("kind", str),
            features=tuple(features),
            threshold=value,
            threshold_rule=threshold,
            files=files,
            window=window,
            created_at=str(data.get("created_at", "")),
            alerting=section("alerting"),
            smoothing=section("smoothing"),
            lineage=section("lineage"),
            metrics=section("metrics"),
            extra=section("extra"),
            format_version=fmt,
            feature_groups=_groups_section(data.get("feature_groups"), source),
        )


def check_threshold(value: Any, entities: Any, what: str) -> None:
    """A bundle's threshold and per-entity thresholds are finite numbers: +inf never flags and
    -inf flags every row (in memory a never-flagging scorer is fine; a bundle is not), and
    JSON has no infinity."""
    def finite(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if not finite(value):
        raise BundleError(f"{what}.value must be a finite number, got {value!r}")
    if entities is None:
        return
    if not isinstance(entities, dict):
        raise BundleError(f"{what}.{ENTITIES_KEY} must map entity ids to thresholds")
    for entity, own in entities.items():
        if not finite(own):
            raise BundleError(f"{what}.{ENTITIES_KEY}: entity {entity!r} has threshold "
                              f"{own!r}; it must be a finite number")


def _groups_section(value: Any, source: str) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, list) for k, v in value.items()):
        raise BundleError(f"{source}: manifest 'feature_groups' must map group names to lists "
                          "of feature names")
    return {k: list(v) for k, v in value.items()}


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def engine_path(self) -> Path | None:
        plan = self.path / ENGINE_FILE
        return plan if ENGINE_FILE in self.manifest.files else None

    def model_bytes(self) -> bytes:
        return self.model_path.read_bytes()


def verify_model_io(model: bytes | Path, n_features: int, window: int | None) -> None:
    """Check the ONNX graph has the contract's input/output names and shapes."""
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else "model.onnx"
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            model if isinstance(model, bytes) else str(model),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise BundleError(f"{source}: onnxruntime cannot load the graph: {exc}") from exc
    inputs = session.get_inputs()
    outputs = {o.name: o for o in session.get_outputs()}
    expected_rank = 2 if window is None else 3
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        names = [i.name for i in inputs]
        raise BundleError(f"{source}: expected exactly one input named {INPUT_NAME!r}, got {names}")
    shape = inputs[0].shape
    if len(shape) != expected_rank or shape[-1] != n_features:
        raise BundleError(
            f"{source}: input {INPUT_NAME!r} has shape {shape}; the manifest expects "
            f"{'[batch, window, ' if window else '[batch, '}{n_features}]"
        )
    if window is not None and isinstance(shape[1], int) and shape[1] != window:
        raise BundleError(f"{source}: input window is {shape[1]}, manifest says {window}")
    if inputs[0].type != "tensor(float)":
        raise BundleError(f"{source}: input {INPUT_NAME!r} must be float32, got {inputs[0].type}")
    missing = [n for n in OUTPUT_NAMES if n not in outputs]
    if missing:
        raise BundleError(f"{source}: graph lacks outputs {missing}; it has {sorted(outputs)}")
    score_shape = outputs["score"].shape
    err_shape = outputs["feature_errors"].shape
    if len(score_shape) != 1:
        raise BundleError(f"{source}: output 'score' must be [batch], got {score_shape}")
    if len(err_shape) != 2 or err_shape[-1] != n_features:
        raise BundleError(
            f"{source}: output 'feature_errors' must be [batch, {n_features}], got {err_shape}"
        )


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read a bundle directory, verifying manifest, checksums and the graph's I/O contract."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not path.is_dir():
        raise BundleError(f"model bundle directory {path} does not exist")
    if not manifest_path.is_file():
        raise BundleError(f"{path}: no {MANIFEST_FILE}; this is not a model bundle")
    try:
        data = json.loads(manifest_path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: manifest is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{manifest_path}: manifest must be a JSON object")
    manifest = Manifest.from_dict(data, source=str(manifest_path))
    if MODEL_FILE not in manifest.files:
        raise BundleError(f"{manifest_path}: manifest 'files' does not list {MODEL_FILE}")
    for rel, expected in manifest.files.items():
        file_path = path / rel
        if not file_path.is_file():
            raise BundleError(f"{path}: file {rel} listed in the manifest is missing")
        actual = sha256_file(file_path)
        if actual != expected:
            raise BundleError(
                f"{file_path}: checksum mismatch (manifest sha256 {expected[:12]}..., file "
                f"{actual[:12]}...); the bundle was modified or corrupted after it was written"
            )
    verify_model_io(path / MODEL_FILE, manifest.n_features, manifest.window)
    return Bundle(path=path, manifest=manifest)


def load_version(models_dir: str | os.PathLike[str], name: str, version: str) -> Bundle:
    """One published version, refused when its manifest names another model or version (a
    version directory copied or renamed by hand): a pointer written from it would name what it
    says it is, not where it is, and a scorer would reload it on every poll."""
    bundle = load_bundle(version_dir(models_dir, name, version))
    found = (bundle.manifest.name, bundle.manifest.version)
    if found != (name, str(version)):
        raise BundleError(
            f"{bundle.path / MANIFEST_FILE}: names version {found[1]!r} of model {found[0]!r} "
            f"but lies at version {version!r} of {name!r}; a version directory was copied or "
            "renamed: restore it, or write the model again as a new version")
    return bundle


def model_dir(models_dir: str | os.PathLike[str], name: str) -> Path:
    return Path(models_dir) / _check_name("name", name)


def version_dir(models_dir: str | os.PathLike[str], name: str, version: str) -> Path:
    """Directory of one version; the version is checked, since it often comes from data (a
    scored row's ``model_version``) and must not reach outside the model's directory."""
    return model_dir(models_dir, name) / _check_name("version", str(version))


def list_versions(models_dir: str | os.PathLike[str], name: str) -> list[str]:
    """Published versions, oldest first (numeric versions sort numerically)."""
    root = model_dir(models_dir, name)
    if not root.is_dir():
        return []
    versions = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(versions, key=lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v))


WITHDRAWN_PREFIX = ".withdrawn-version-"


def _next_version(models_dir: str | os.PathLike[str], name: str) -> str:
    numeric = [int(v) for v in list_versions(models_dir, name) if v.isdigit()]
    root = model_dir(models_dir, name)
    if root.is_dir():  # withdrawn numbers are never handed out again
        numeric += [int(p.name[len(WITHDRAWN_PREFIX):]) for p in root.iterdir()
                    if p.name.startswith(WITHDRAWN_PREFIX)
                    and p.name[len(WITHDRAWN_PREFIX):].isdigit()]
    return str(max(numeric, default=0) + 1)


def write_bundle(
    models_dir: str | os.PathLike[str],
    name: str,
    model: bytes,
    *,
    kind: str,
    features: Sequence[str],
    threshold: float,
    threshold_rule: Mapping[str, Any],
    window: int | None = None,
    alerting: Mapping[str, Any] | None = None,
    smoothing: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    version: str | None = None,
    feature_groups: Mapping[str, Sequence[str]] | None = None,
) -> Bundle:
    """Stage, verify and publish a new immutable version; returns the loaded bundle."""
    root = model_dir(models_dir, name)
    if version is not None and (not isinstance(version, str) or not version):
        raise BundleError(f"model {name!r}: version {version!r} must be a non-empty text "
                          "(or None for the next number)")
    try:  # before anything is staged
        FeatureGroups.build(features, feature_groups)
    except FeatureGroupError as exc:
        raise BundleError(f"model {name!r}: {exc}") from exc
    for rel in extra_files or {}:
        if not _NAME_RE.match(rel) or rel in (MODEL_FILE, MANIFEST_FILE):
            raise BundleError(
                f"model {name!r}: extra file {rel[:80]!r} must be a plain file name (1-128 "
                "letters, digits, '_', '.', '-', starting with a letter or digit) other than "
                f"{MODEL_FILE} and {MANIFEST_FILE}")
    if "value" in threshold_rule:
        raise BundleError(f"model {name!r}: threshold_rule must not carry 'value' (it would "
                          "override the threshold); pass the threshold alone")
    check_threshold(threshold, threshold_rule.get(ENTITIES_KEY), f"model {name!r}: threshold")
    root.mkdir(parents=True, exist_ok=True)
    verify_model_io(model, len(features), window)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    # mkdtemp makes the directory 0700; a published version is readable like any directory
    # (a scorer may run as another user)
    os.chmod(staging, 0o777 & ~current_umask())
    try:
        files = {MODEL_FILE: model, **dict(extra_files or {})}
        for rel, payload in files.items():
            with open(staging / rel, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())  # durable before the rename publishes it
        for _attempt in range(100):
            chosen = _check_name("version", version if version is not None
                                 else _next_version(models_dir, name))
            manifest = Manifest(
                name=name,
                version=chosen,
                kind=kind,
                features=tuple(features),
                threshold=float(threshold),
                threshold_rule=dict(threshold_rule),
                files={rel: sha256_file(staging / rel) for rel in files},
                window=window,
                created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                alerting=dict(alerting or {}),
                smoothing=dict(smoothing or {}),
                lineage=dict(lineage or {}),
                metrics=dict(metrics or {}),
                extra=dict(extra or {}),
                feature_groups={k: list(v) for k, v in (feature_groups or {}).items()},
            )
            with open(staging / MANIFEST_FILE, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(manifest.to_dict(), indent=2, sort_keys=True,
                                    allow_nan=False))
                fh.flush()
                os.fsync(fh.fileno())
            # verified as it will be read before it is published: a version that cannot load
            # never appears (nor takes a number)
            staged = load_bundle(staging)
            target = root / chosen
            try:
                if target.exists():  # rename(2) would replace an empty directory silently
                    raise FileExistsError(target)
                os.rename(staging, target)  # atomic; fails if the version exists
                fsync_directory(root)  # the published name survives a power loss
            except OSError:
                if version is not None:
                    raise BundleError(
                        f"{target} already exists: bundle versions are immutable, "
                        "pick a new version"
                    ) from None
                continue  # a concurrent writer took this number; try the next one
            return Bundle(path=target, manifest=staged.manifest)
        raise BundleError(f"{root}: could not allocate a new version number")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def withdraw_version(models_dir: str | os.PathLike[str], name: str, version: str) -> None:
    """Unpublish a version that must never be promoted (its registration failed): renamed out
    of the listing in one step, then deleted. The champion cannot be withdrawn."""
    if champion_version(models_dir, name) == version:
        raise BundleError(f"version {version} of {name!r} is the champion; promote another "
                          "version before withdrawing it")
    target = version_dir(models_dir, name, version)
    # the number stays taken: an MLflow run (or model version) of the failed attempt may still
    # name it, so the next bundle must not reuse it. Marked before the version leaves the
    # listing, so no moment (nor a crash) frees the number
    marker = target.parent / f"{WITHDRAWN_PREFIX}{version}"
    marker.touch()
    fsync_directory(target.parent)
    hidden = target.with_name(f".withdrawn-{version}-{uuid.uuid4().hex[:8]}")
    os.rename(target, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def champion_version(models_dir: str | os.PathLike[str], name: str) -> str | None:
    path = model_dir(models_dir, name) / CHAMPION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
        return str(data["version"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # JSON, UTF-8, shape
        raise BundleError(f"{path}: not a valid champion pointer ({str(exc)[:200]}); re-point "
                          "it with the rollback job (a version and a reason)") from exc


def promote(
    models_dir: str | os.PathLike[str],
    name: str,
    version: str,
    *,
    details: Mapping[str, Any] | None = None,
) -> Path:
    """Point ``champion.json`` at ``version`` (verified first), replacing it atomically."""
    load_version(models_dir, name, version)
    pointer = {
        "name": name,
        "version": str(version),
        "promoted_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "details": dict(details or {}),
    }
    target = model_dir(models_dir, name) / CHAMPION_FILE
    atomic_write_text(target, jsonio.dumps(pointer, indent=2, sort_keys=True))
    return target


def champion_pointer(models_dir: str | os.PathLike[str], name: str) -> dict[str, Any] | None:
    """``champion.json`` as written by :func:`promote` (None when absent or unreadable)."""
    path = model_dir(models_dir, name) / CHAMPION_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_champion(models_dir: str | os.PathLike[str], name: str) -> Bundle:
    version = champion_version(models_dir, name)
    if version is None:
        raise BundleError(
            f"no champion for model {name!r}: {model_dir(models_dir, name) / CHAMPION_FILE} "
            "does not exist; train and promote a model first (materialize the 'champion' asset, "
            "or run `make demo`)"
        )
    return load_version(models_dir, name, version)
