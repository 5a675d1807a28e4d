from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ds_assets.training.export import export_onnx
from ds_serving import bundle as b
from ds_serving.scoring import Scorer, ScoringInputError
from tests.support.training import FEATURES, correlated_rows, tiny_model


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return export_onnx(tiny_model(epochs=2))


def _write(models: Path, model: bytes, **kwargs: object) -> b.Bundle:
    args: dict[str, object] = {
        "kind": "dense_autoencoder",
        "features": FEATURES,
        "threshold": 1.5,
        "threshold_rule": {"rule": "quantile", "quantile": 0.99},
        "lineage": {"partitions": ["2026-11-01"]},
    }
    args.update(kwargs)
    return b.write_bundle(models, "ae", model, **args)  # type: ignore[arg-type]


def test_round_trip_and_versions(tmp_path: Path, onnx_bytes: bytes) -> None:
    first = _write(tmp_path, onnx_bytes)
    second = _write(tmp_path, onnx_bytes)
    assert (first.manifest.version, second.manifest.version) == ("1", "2")
    loaded = b.load_bundle(first.path)
    assert loaded.manifest == first.manifest
    assert loaded.manifest.features == tuple(FEATURES)
    assert loaded.manifest.threshold == 1.5
    assert loaded.manifest.threshold_rule == {"rule": "quantile", "quantile": 0.99}
    assert loaded.manifest.files[b.MODEL_FILE] == b.sha256_file(first.model_path)
    assert b.list_versions(tmp_path, "ae") == ["1", "2"]
    assert not [p for p in (tmp_path / "ae").iterdir() if p.name.startswith(".staging")]


def test_explicit_version_is_immutable(tmp_path: Path, onnx_bytes: bytes) -> None:
    _write(tmp_path, onnx_bytes, version="v1")
    with pytest.raises(b.BundleError, match="immutable"):
        _write(tmp_path, onnx_bytes, version="v1")


def test_an_empty_directory_does_not_let_a_version_be_replaced(
    tmp_path: Path, onnx_bytes: bytes
) -> None:
    (tmp_path / "ae" / "v1").mkdir(parents=True)  # rename(2) would silently replace it
    with pytest.raises(b.BundleError, match="immutable"):
        _write(tmp_path, onnx_bytes, version="v1")
    assert _write(tmp_path, onnx_bytes).manifest.version != "v1"


def test_published_version_is_readable_by_other_users(tmp_path: Path, onnx_bytes: bytes) -> None:
    old = os.umask(0o022)
    try:
        bundle = _write(tmp_path, onnx_bytes)
    finally:
        os.umask(old)
    assert bundle.path.stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700
    assert bundle.model_path.stat().st_mode & 0o777 == 0o644


def test_champion_pointer(tmp_path: Path, onnx_bytes: bytes) -> None:
    with pytest.raises(b.BundleError, match=r"no champion for model 'ae'.*champion.json"):
        b.load_champion(tmp_path, "ae")
    one = _write(tmp_path, onnx_bytes)
    two = _write(tmp_path, onnx_bytes)
    b.promote(tmp_path, "ae", one.manifest.version)
    assert b.load_champion(tmp_path, "ae").manifest.version == "1"
    b.promote(tmp_path, "ae", two.manifest.version, details={"reason": "better"})
    pointer = json.loads((tmp_path / "ae" / b.CHAMPION_FILE).read_text())
    assert pointer["version"] == "2" and pointer["details"] == {"reason": "better"}
    assert [p.name for p in (tmp_path / "ae").iterdir() if p.suffix == ".tmp"] == []


def test_tampered_model_is_refused(tmp_path: Path, onnx_bytes: bytes) -> None:
    bundle = _write(tmp_path, onnx_bytes)
    data = bytearray(bundle.model_path.read_bytes())
    data[-1] ^= 0xFF
    bundle.model_path.write_bytes(bytes(data))
    with pytest.raises(b.BundleError, match=r"model.onnx: checksum mismatch"):
        b.load_bundle(bundle.path)


def test_promote_refuses_a_corrupt_bundle(tmp_path: Path, onnx_bytes: bytes) -> None:
    good = _write(tmp_path, onnx_bytes)
    bad = _write(tmp_path, onnx_bytes)
    b.promote(tmp_path, "ae", good.manifest.version)
    bad.model_path.write_bytes(b"not a model")
    with pytest.raises(b.BundleError, match="checksum mismatch"):
        b.promote(tmp_path, "ae", bad.manifest.version)
    assert b.champion_version(tmp_path, "ae") == good.manifest.version


def test_wrong_feature_count_is_refused(tmp_path: Path, onnx_bytes: bytes) -> None:
    with pytest.raises(b.BundleError, match=r"input 'features' has shape .*expects \[batch, 5\]"):
        _write(tmp_path, onnx_bytes, features=[*FEATURES, "extra"])
    assert b.list_versions(tmp_path, "ae") == []


def test_manifest_edited_to_wrong_shape_is_refused(tmp_path: Path, onnx_bytes: bytes) -> None:
    bundle = _write(tmp_path, onnx_bytes)
    manifest_path = bundle.path / b.MANIFEST_FILE
    data = json.loads(manifest_path.read_text())
    data["features"] = FEATURES[:3]
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(b.BundleError, match=r"expects \[batch, 3\]"):
        b.load_bundle(bundle.path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("features"), "missing required key 'features'"),
        (lambda d: d.update(format_version=99), "format_version 99 is not supported"),
        (lambda d: d["threshold"].update(value="high"),
         "threshold.value must be a finite number, got 'high'"),
        (lambda d: d["threshold"].update(value=float("-inf")),
         "threshold.value must be a finite number, got -inf"),
        (lambda d: d["threshold"].update(entities={"h1": float("inf")}),
         "entity 'h1' has threshold inf; it must be a finite number"),
        (lambda d: d.update(alerting="strict"), "key 'alerting' must be an object .* got str"),
        (lambda d: d.update(lineage=[1, 2]), "key 'lineage' must be an object .* got list"),
        (lambda d: d.update(smoothing=5), "key 'smoothing' must be an object .* got int"),
        (lambda d: d.update(format_version=True), "key 'format_version' should be"),
        (lambda d: d["files"].update({"extra.bin": "0" * 64}), "extra.bin listed in the manifest"),
        (lambda d: d["files"].update({"model.onnx": "not-a-digest"}), "sha256 hex digest"),
    ],
)
def test_bad_manifest_messages(tmp_path: Path, onnx_bytes: bytes, edit, message: str) -> None:
    bundle = _write(tmp_path, onnx_bytes)
    manifest_path = bundle.path / b.MANIFEST_FILE
    data = json.loads(manifest_path.read_text())
    edit(data)
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(b.BundleError, match=message):
        b.load_bundle(bundle.path)


@pytest.mark.parametrize("name", ["../../outside.bin", "/etc/passwd", "sub/model.onnx", "..",
                                  ".hidden", "x" * 200])
def test_manifest_files_cannot_name_anything_outside_the_version(
    tmp_path: Path, onnx_bytes: bytes, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    bundle = _write(tmp_path / "models", onnx_bytes)
    manifest_path = bundle.path / b.MANIFEST_FILE
    data = json.loads(manifest_path.read_text())
    data["files"][name] = b.sha256_file(outside)
    manifest_path.write_text(json.dumps(data))
    hashed: list[Path] = []
    real = b.sha256_file
    monkeypatch.setattr(b, "sha256_file", lambda p: hashed.append(p) or real(p))
    with pytest.raises(b.BundleError, match=r"is not a plain file name in the bundle directory"):
        b.load_bundle(bundle.path)
    assert hashed == []  # refused before any file is read


def test_missing_bundle_and_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(b.BundleError, match="does not exist"):
        b.load_bundle(tmp_path / "nope")
    with pytest.raises(b.BundleError, match="not a model bundle"):
        b.load_bundle(tmp_path)


def test_invalid_names(tmp_path: Path, onnx_bytes: bytes) -> None:
    with pytest.raises(b.BundleError, match=r"invalid model name"):
        b.write_bundle(tmp_path, "../escape", onnx_bytes, kind="x", features=FEATURES,
                       threshold=1.0, threshold_rule={})
    # versions often come from data (a scored row's model_version): never a path outside
    with pytest.raises(b.BundleError, match=r"invalid model version '\.\./\.\./etc'"):
        b.version_dir(tmp_path, "ae", "../../etc")
    assert b.version_dir(tmp_path, "ae", "3") == tmp_path / "ae" / "3"
    # so does a champion pointer edited by hand
    (tmp_path / "ae").mkdir()
    (tmp_path / "ae" / b.CHAMPION_FILE).write_text('{"version": "../other"}')
    with pytest.raises(b.BundleError, match=r"invalid model version '\.\./other'"):
        b.load_champion(tmp_path, "ae")


def test_scorer_flags_and_input_errors(tmp_path: Path, onnx_bytes: bytes) -> None:
    bundle = _write(tmp_path, onnx_bytes, threshold=0.5)
    scorer = Scorer.from_bundle(bundle, backend="cpu")
    rows = correlated_rows(64, seed=3)
    rows[0] += 50.0  # far outside the training distribution
    batch = scorer.score(rows, explain=True)
    assert batch.scores.shape == (64,) and batch.feature_errors is not None
    assert batch.feature_errors.shape == (64, 4)
    np.testing.assert_allclose(batch.scores, batch.feature_errors.mean(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(batch.flags, batch.scores > 0.5)
    assert batch.flags[0]
    with pytest.raises(ScoringInputError, match=r"rows have 3 features.*expects 4"):
        scorer.score(rows[:, :3])
    with pytest.raises(ScoringInputError, match="no rows"):
        scorer.score(np.empty((0, 4), np.float32))
    bad = rows.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ScoringInputError, match="row 5, feature 'f3' is nan"):
        scorer.score(bad)


def test_a_copied_version_directory_is_neither_promoted_nor_served_as_another(
    tmp_path: Path, onnx_bytes: bytes,
) -> None:
    """ae/2 restored as a copy of ae/1 still says version 1: promote wrote a pointer to 1, and
    a scorer pointed at 2 reloaded the same bundle on every poll."""
    models = tmp_path / "models"
    first = _write(models, onnx_bytes)
    shutil.copytree(first.path, models / "ae" / "2")
    with pytest.raises(b.BundleError, match=r"names version '1' of model 'ae' but lies at "
                                            r"version '2' of 'ae'; a version directory was copied"):
        b.promote(models, "ae", "2")
    assert b.champion_version(models, "ae") is None
    b.promote(models, "ae", "1")
    assert b.load_champion(models, "ae").manifest.version == "1"


@pytest.mark.parametrize("rel", ["model.onnx", "config.json", ".ref.json", "../escape.json",
                                 "sub/ref.json"])
def test_a_bundle_that_cannot_load_is_never_published(
    tmp_path: Path, onnx_bytes: bytes, rel: str,
) -> None:
    """An extra file named like the graph or the manifest, or not a plain name, was written,
    published under a new number and only then refused (or written outside the version)."""
    models = tmp_path / "models"
    _write(models, onnx_bytes)
    with pytest.raises(b.BundleError, match="must be a plain file name"):
        _write(models, onnx_bytes, extra_files={rel: b"x"})
    assert b.list_versions(models, "ae") == ["1"]
    assert sorted(p.name for p in (models / "ae").iterdir()) == ["1"]
    assert not (models / "escape.json").exists()
    with pytest.raises(b.BundleError, match="threshold_rule must not carry 'value'"):
        b.write_bundle(models, "ae", onnx_bytes, kind="dense_autoencoder", features=FEATURES,
                       threshold=1.0, threshold_rule={"rule": "fixed", "value": 9.0})
    with pytest.raises(b.BundleError, match=r"threshold\.value must be a finite number"):
        b.write_bundle(models, "ae", onnx_bytes, kind="dense_autoencoder", features=FEATURES,
                       threshold=float("-inf"), threshold_rule={"rule": "fixed"})
    assert b.list_versions(models, "ae") == ["1"]


def test_a_withdrawn_number_is_taken_before_the_version_leaves(
    tmp_path: Path, onnx_bytes: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Marked last, a crash between the rename and the mark (or a writer in between) handed the
    withdrawn number out again."""
    models = tmp_path / "models"
    _write(models, onnx_bytes)
    _write(models, onnx_bytes)

    def crash(*_: object, **__: object) -> None:
        raise KeyboardInterrupt  # the process dies while deleting the withdrawn files

    monkeypatch.setattr(b.shutil, "rmtree", crash)
    with pytest.raises(KeyboardInterrupt):
        b.withdraw_version(models, "ae", "2")
    monkeypatch.undo()
    assert _write(models, onnx_bytes).manifest.version == "3"


@pytest.mark.parametrize("content", [b"\xff\xfe", b'{"version": ', b"[1]", b"[" * 100_000])
def test_a_damaged_champion_pointer_is_named_and_a_rollback_repairs_it(
    tmp_path: Path, onnx_bytes: bytes, content: bytes,
) -> None:
    from ds_assets.training.promotion import rollback_decision

    models = tmp_path / "models"
    _write(models, onnx_bytes)
    (models / "ae" / b.CHAMPION_FILE).write_bytes(content)
    with pytest.raises(b.BundleError, match=r"not a valid champion pointer .* rollback job"):
        b.load_champion(models, "ae")
    decision = rollback_decision(models, "ae", "1", "pointer damaged")
    assert decision.promote and decision.champion_version is None


def test_the_scorer_refuses_a_pointer_to_a_copied_version_once(
    tmp_path: Path, onnx_bytes: bytes,
) -> None:
    """A pointer naming 2, where ae/2 is a copy of ae/1, made the champion loader see a new
    champion on every poll and reload the same bundle each time."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from ds_serving.champion import Candidate, ChampionLoader
    from ds_serving.metrics import ScorerMetrics
    from ds_serving.runtime import ModelRuntime

    models = tmp_path / "models"
    first = _write(models, onnx_bytes)
    shutil.copytree(first.path, models / "ae" / "2")
    (models / "ae" / b.CHAMPION_FILE).write_text(json.dumps({"version": "2"}))
    loads: list[str] = []

    def load(path: Path) -> ModelRuntime:
        loads.append(path.name)
        return ModelRuntime.load(path, backend="cpu")

    async def polls() -> list[object]:
        loader = ChampionLoader(models, "ae", ScorerMetrics(registry=CollectorRegistry()),
                                load=load)
        return [await loader.candidate(None) for _ in range(3)]

    outcomes = asyncio.run(polls())
    assert outcomes == ["failure"] * 3 and loads == ["2"]
    assert not any(isinstance(o, Candidate) for o in outcomes)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"features": [*FEATURES[:3], FEATURES[0]]},
     r"feature\(s\) \['f1'\] listed more than once"),
    ({"version": ""}, r"version '' must be a non-empty text"),
    ({"version": 3}, r"version 3 must be a non-empty text"),
])
def test_write_bundle_names_a_repeated_feature_and_a_version_that_is_not_text(
    tmp_path: Path, onnx_bytes: bytes, kwargs: dict[str, object], message: str,
) -> None:
    """A repeated feature read as a group clash ("has the name of a feature outside it"); an
    empty version fell back to automatic numbering, an int one raised a raw TypeError."""
    with pytest.raises(b.BundleError, match=message):
        _write(tmp_path / "models", onnx_bytes, **kwargs)
