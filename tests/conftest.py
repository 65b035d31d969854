"""Shared fixtures: offline environment, a tiny open_clip model on disk, stores in tmp_path."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Offline and isolated before anything imports prefect or huggingface_hub.
_HOME = tempfile.mkdtemp(prefix="omnivec-tests-")
os.environ["PREFECT_HOME"] = os.path.join(_HOME, "prefect")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_HOME, "hf")  # an empty cache: default weights are unavailable
os.environ["XDG_CACHE_HOME"] = os.path.join(_HOME, "cache")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"
for key in list(os.environ):
    if (key.startswith("OMNIVEC_") and key != "OMNIVEC_TEST_ARTIFACTS") or key == "PREFECT_API_URL":
        del os.environ[key]

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from omnivec.config import Settings, load_settings  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omnivec.testing import make_tiny_open_clip

    return make_tiny_open_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omnivec.testing import make_tiny_clap

    return make_tiny_clap(tmp_path_factory.mktemp("tiny_clap"))


def make_settings(store: Path, model_dir: Path, clap_dir: Path | None = None, text: bool = False,
                  **extra: object) -> Settings:
    """clip on a tiny model; clap on a tiny model when ``clap_dir`` is given, else switched off; the
    text space (the real bundled MiniLM) only when ``text``."""
    clap = {"model": str(clap_dir)} if clap_dir else {"enabled": False}
    spaces = {"clip": {"model": f"local-dir:{model_dir}"}, "clap": clap, "text": {"enabled": text}}
    return load_settings(overrides={"store": str(store), "spaces": spaces, **extra}, env={})


def vtable(store: object, space: str) -> str:
    """The vector table of a space name (tests build one identity per name unless they say so)."""
    from omnivec.store import Store

    st = store if isinstance(store, Store) else Store(str(store))
    tables = [t for name, _, t in st.vector_tables() if name == space]
    assert len(tables) == 1, tables
    return tables[0]


def vectors_of(store: object, space: str, columns: list[str] | None = None):  # type: ignore[no-untyped-def]
    from omnivec.store import Store

    st = store if isinstance(store, Store) else Store(str(store))
    return st.read(vtable(st, space), columns)


def assets_of(store: object, space: str):  # type: ignore[no-untyped-def]
    from omnivec.store import Store

    st = store if isinstance(store, Store) else Store(str(store))
    return st.read("assets_" + vtable(st, space)[len("vectors_"):])


@pytest.fixture
def settings(tmp_path: Path, tiny_clip_dir: Path) -> Settings:
    return make_settings(tmp_path / "store", tiny_clip_dir, batch_size=8)


@pytest.fixture
def av_settings(tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path) -> Settings:
    """Both joint spaces: clip (image, text) and clap (audio, text)."""
    return make_settings(tmp_path / "store", tiny_clip_dir, tiny_clap_dir, batch_size=8)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """18 images and 6 texts (no audio: the clip-only tests count on those numbers)."""
    from omnivec.sample import build_sample_corpus

    return build_sample_corpus(tmp_path / "corpus", audio=False)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (its start costs 15-25 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
