"""Tests for omnivec.config.load_settings: defaults < toml file < OMNIVEC_* env < overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from omnivec.config import Settings, SpaceSettings, load_settings
from omnivec.errors import ConfigError


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty folder so a stray ./omnivec.toml cannot leak into any test."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def write_toml(tmp_path: Path, body: str, name: str = "settings.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


FILE = """
store = "/from/file"
batch_size = 16
device = "cpu"

[spaces.clip]
model = "ViT-L-14"
"""


# --------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    s = load_settings(env={})
    assert isinstance(s, Settings)
    assert s.store == "./omnivec-data"
    assert s.batch_size == 64
    assert s.device == "auto"
    assert s.include == [] and s.exclude == []
    assert s.include_hidden is False
    assert set(s.spaces) == {"clip", "clap", "text"}
    clip = s.spaces["clip"]
    assert clip.model == "ViT-B-32"
    assert clip.pretrained == "laion2b_s34b_b79k"
    assert clip.encoder == "open_clip"
    assert clip.enabled is True
    clap = s.spaces["clap"]
    assert (clap.encoder, clap.model, clap.window_s, clap.hop_s) == ("clap", "laion/clap-htsat-unfused", None, None)
    text = s.spaces["text"]
    assert (text.encoder, text.model, text.chunk_overlap) == ("sentence_transformers", "all-MiniLM-L6-v2", 32)
    assert set(s.enabled_spaces()) == {"clip", "clap", "text"}
    assert s.space_batch_size("clip") == 64


def test_defaults_ignore_the_process_environment_when_env_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in os.environ if k.startswith("OMNIVEC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("OMNIVEC_BATCH_SIZE", "7")
    assert load_settings(env={}).batch_size == 64
    assert load_settings().batch_size == 7  # env=None reads os.environ


# --------------------------------------------------------------------------- config file


def test_toml_file_overrides_defaults(tmp_path: Path) -> None:
    s = load_settings(config_file=write_toml(tmp_path, FILE), env={})
    assert s.store == "/from/file"
    assert s.batch_size == 16
    assert s.device == "cpu"
    assert s.spaces["clip"].model == "ViT-L-14"
    # keys the file does not name keep their defaults, also inside a space table
    assert s.spaces["clip"].pretrained == "laion2b_s34b_b79k"
    assert s.workers == 2


def test_config_file_as_string_path(tmp_path: Path) -> None:
    s = load_settings(config_file=str(write_toml(tmp_path, FILE)), env={})
    assert s.batch_size == 16


def test_local_omnivec_toml_is_found() -> None:
    Path("omnivec.toml").write_text("batch_size = 3\n", encoding="utf-8")
    assert load_settings(env={}).batch_size == 3


def test_omnivec_config_env_names_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, FILE)
    s = load_settings(env={"OMNIVEC_CONFIG": str(path)})
    assert s.batch_size == 16
    assert s.store == "/from/file"


def test_explicit_config_file_beats_omnivec_config(tmp_path: Path) -> None:
    explicit = write_toml(tmp_path, "batch_size = 5\n", "explicit.toml")
    from_env = write_toml(tmp_path, "batch_size = 9\n", "env.toml")
    s = load_settings(config_file=explicit, env={"OMNIVEC_CONFIG": str(from_env)})
    assert s.batch_size == 5


def test_missing_config_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.toml", env={})


def test_missing_omnivec_config_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={"OMNIVEC_CONFIG": str(tmp_path / "nope.toml")})


def test_config_file_that_is_a_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(config_file=tmp_path, env={})


def test_malformed_toml_raises(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "batch_size = = 3\n[spaces\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(config_file=path, env={})


# --------------------------------------------------------------------------- environment


def test_env_overrides_file(tmp_path: Path) -> None:
    env = {"OMNIVEC_BATCH_SIZE": "32", "OMNIVEC_SPACES__CLIP__MODEL": "RN50"}
    s = load_settings(config_file=write_toml(tmp_path, FILE), env=env)
    assert s.batch_size == 32
    assert s.spaces["clip"].model == "RN50"
    # what the environment does not name still comes from the file / defaults
    assert s.store == "/from/file"
    assert s.device == "cpu"
    assert s.spaces["clip"].pretrained == "laion2b_s34b_b79k"


def test_env_list_values_are_comma_separated() -> None:
    env = {"OMNIVEC_INCLUDE": "*.jpg,*.png", "OMNIVEC_EXCLUDE": " raw/* , *.tmp ,"}
    s = load_settings(env=env)
    assert s.include == ["*.jpg", "*.png"]
    assert s.exclude == ["raw/*", "*.tmp"]


def test_env_booleans_and_numbers_are_parsed() -> None:
    env = {
        "OMNIVEC_INCLUDE_HIDDEN": "true",
        "OMNIVEC_WORKERS": "4",
        "OMNIVEC_SPACES__CLIP__ENABLED": "false",
        "OMNIVEC_SPACES__CLIP__BATCH_SIZE": "8",
    }
    s = load_settings(env=env)
    assert s.include_hidden is True
    assert s.workers == 4
    assert s.spaces["clip"].enabled is False
    assert s.spaces["clip"].batch_size == 8
    assert set(s.enabled_spaces()) == {"clap", "text"}


def test_unrelated_env_variables_are_ignored() -> None:
    env = {
        "OMNIVEC_API_TOKEN": "secret",  # another part's variable
        "OMNIVEC_HOME": "/opt/omnivec",  # the deployments' variable
        "BATCH_SIZE": "1",  # no prefix
        "HOME": "/home/x",
    }
    assert load_settings(env=env) == load_settings(env={})


@pytest.mark.parametrize(("key", "meant"), [("OMNIVEC_STOER", "OMNIVEC_STORE"),
                                            ("OMNIVEC_BATCHSIZE", "OMNIVEC_BATCH_SIZE"),
                                            ("OMNIVEC_CONFIG_DIR", "OMNIVEC_CONFIG"),
                                            ("OMNIVEC_SPACES__CLIP__MODLE", "OMNIVEC_SPACES__CLIP__MODEL"),
                                            ("OMNIVEC_SPACES__CLIP", "OMNIVEC_SPACES__CLIP__MODEL")])
def test_unknown_env_keys_are_refused_with_the_key_and_a_guess(key: str, meant: str) -> None:
    assert key != meant
    with pytest.raises(ConfigError) as info:
        load_settings(env={key: "1"})
    assert key in info.value.problem and f"did you mean {meant}?" in info.value.problem


def test_every_omnivec_variable_the_code_reads_is_registered() -> None:
    """Each OMNIVEC_* name in the code, scripts and deploy files is a setting or an ENV_KEYS entry, and
    each registered key is read somewhere (a reader outside the registry cannot be forgotten)."""
    import re

    from omnivec.config import ENV_KEYS, _env_parts

    root = Path(__file__).resolve().parents[1]
    kinds = (".py", ".sh", ".yaml", ".yml", ".toml", "")
    files = [p for d in ("omnivec", "flows", "tasks", "benchmarks", "scripts", "deploy") for p in (root / d).rglob("*")
             if p.is_file() and p.suffix in kinds and "__pycache__" not in str(p)]
    files += [root / "tests" / "conftest.py", root / "tests" / "test_web_page.py"]
    found: dict[str, Path] = {}
    for path in files:
        text = path.read_text(errors="replace")
        for m in re.finditer(r"OMNIVEC_[A-Z0-9_]*", text):
            if text[m.end():m.end() + 1] not in ("<", "{") and m.group().rstrip("_") != "OMNIVEC":  # a name, not a form
                found.setdefault(m.group().rstrip("_"), path)
    assert {"OMNIVEC_STORE", "OMNIVEC_API_TOKEN", "OMNIVEC_EXACT_CACHE_MB", "OMNIVEC_HOME"} <= set(found)
    for key, path in sorted(found.items()):
        if key not in ENV_KEYS:
            try:
                _env_parts(key)  # a ConfigError: neither a setting nor registered
            except ConfigError as exc:
                raise AssertionError(f"{key} (in {path}) is not registered in omnivec.config.ENV_KEYS") from exc
    assert set(ENV_KEYS) <= set(found), set(ENV_KEYS) - set(found)


@pytest.mark.parametrize(("key", "value", "allowed"), [("OMNIVEC_EXACT_CACHE_MB", "inf", "megabytes"),
                                                       ("OMNIVEC_EXACT_CACHE_MB", "lots", "megabytes"),
                                                       ("OMNIVEC_EXACT_CACHE_MB", "-5", "megabytes"),
                                                       ("OMNIVEC_EXACT_FIRST_PASS", "fast", "auto, bf16, off"),
                                                       ("OMNIVEC_TEMPORARY_SERVER", "lowest", "idle, normal")])
def test_bad_values_of_other_parts_variables_are_refused_naming_the_key(key: str, value: str, allowed: str) -> None:
    from omnivec.config import env

    with pytest.raises(ConfigError, match=key) as info:
        load_settings(env={key: value})
    assert allowed in info.value.render()
    with pytest.raises(ConfigError, match=key):
        env(key, {key: value})  # the reader itself refuses it too


def test_exact_cache_reads_its_registered_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from omnivec.exact import cache_bytes, first_pass_mode

    assert cache_bytes() == 1024 * 1024 * 1024 and first_pass_mode() == "auto"  # defaults
    monkeypatch.setenv("OMNIVEC_EXACT_CACHE_MB", "0.5")
    monkeypatch.setenv("OMNIVEC_EXACT_FIRST_PASS", " OFF ")
    assert cache_bytes() == 512 * 1024 and first_pass_mode() == "off"
    monkeypatch.setenv("OMNIVEC_EXACT_CACHE_MB", "inf")
    with pytest.raises(ConfigError, match="OMNIVEC_EXACT_CACHE_MB"):
        cache_bytes()


def test_bad_env_value_raises() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        load_settings(env={"OMNIVEC_BATCH_SIZE": "lots"})


def test_env_can_add_a_new_space() -> None:
    s = load_settings(env={"OMNIVEC_SPACES__SIGLIP__MODEL": "ViT-B-16-SigLIP",
                           "OMNIVEC_SPACES__SIGLIP__ENCODER": "open_clip"})
    assert s.spaces["siglip"].model == "ViT-B-16-SigLIP"
    assert s.spaces["siglip"].encoder == "open_clip"
    assert set(s.enabled_spaces()) == {"clip", "clap", "text", "siglip"}


def test_a_new_space_without_its_encoder_is_refused_with_a_guess(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'clip'") as info:
        load_settings(env={"OMNIVEC_SPACES__CLPI__MODEL": "RN50"})
    assert "'clpi'" in info.value.problem and "the environment" in info.value.problem
    path = write_toml(tmp_path, '[spaces.clpi]\nmodel = "RN50"\n')
    with pytest.raises(ConfigError, match="did you mean 'clip'") as info:
        load_settings(config_file=path, env={})
    assert str(path) in info.value.problem and any("encoder" in r for r in info.value.remedies)
    # the encoder named in the file, the model in the environment: a new space
    path = write_toml(tmp_path, '[spaces.clpi]\nencoder = "open_clip"\n')
    assert load_settings(config_file=path, env={"OMNIVEC_SPACES__CLPI__MODEL": "RN50"}).spaces["clpi"].model == "RN50"


@pytest.mark.parametrize("where", ["flag", "env", "file"])
def test_an_empty_store_path_is_refused(tmp_path: Path, where: str) -> None:
    kwargs: dict[str, object] = {"env": {}}
    if where == "flag":
        kwargs["overrides"] = {"store": ""}
    elif where == "env":
        kwargs["env"] = {"OMNIVEC_STORE": "  "}
    else:
        kwargs["config_file"] = write_toml(tmp_path, 'store = ""\n')
    with pytest.raises(ConfigError, match="store path is empty"):
        load_settings(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- overrides (flags)


def test_overrides_beat_env_and_file(tmp_path: Path) -> None:
    env = {"OMNIVEC_BATCH_SIZE": "32", "OMNIVEC_SPACES__CLIP__MODEL": "RN50"}
    s = load_settings(
        config_file=write_toml(tmp_path, FILE),
        env=env,
        overrides={"batch_size": 8, "spaces": {"clip": {"model": "ViT-H-14"}}},
    )
    assert s.batch_size == 8
    assert s.spaces["clip"].model == "ViT-H-14"
    assert s.store == "/from/file"
    assert s.spaces["clip"].pretrained == "laion2b_s34b_b79k"


def test_none_overrides_are_ignored(tmp_path: Path) -> None:
    s = load_settings(
        config_file=write_toml(tmp_path, FILE),
        env={"OMNIVEC_BATCH_SIZE": "32"},
        overrides={
            "batch_size": None,
            "store": None,
            "device": None,
            "spaces": {"clip": {"model": None}},
        },
    )
    assert s.batch_size == 32  # from env
    assert s.store == "/from/file"  # from file
    assert s.device == "cpu"
    assert s.spaces["clip"].model == "ViT-L-14"


def test_none_override_does_not_erase_a_default() -> None:
    s = load_settings(env={}, overrides={"store": None, "include": None})
    assert s.store == "./omnivec-data"
    assert s.include == []


def test_bad_override_raises() -> None:
    with pytest.raises(ConfigError, match="device"):
        load_settings(env={}, overrides={"device": "tpu"})


# --------------------------------------------------------------------------- spaces


def test_space_can_be_disabled(tmp_path: Path) -> None:
    body = """
[spaces.clip]
enabled = false

[spaces.other]
encoder = "open_clip"
model = "RN50"
"""
    s = load_settings(config_file=write_toml(tmp_path, body), env={})
    assert "clip" in s.spaces
    assert s.spaces["clip"].enabled is False
    assert set(s.enabled_spaces()) == {"clap", "text", "other"}


def test_new_space_table_gets_space_defaults(tmp_path: Path) -> None:
    body = """
batch_size = 12

[spaces.other]
encoder = "open_clip"
model = "RN50"
"""
    s = load_settings(config_file=write_toml(tmp_path, body), env={})
    other = s.spaces["other"]
    defaults = SpaceSettings()
    assert other.model == "RN50"
    assert other.encoder == defaults.encoder == "open_clip"
    assert other.pretrained == defaults.pretrained
    assert other.enabled is True
    assert other.batch_size is None
    assert other.chunk_overlap == defaults.chunk_overlap
    assert s.space_batch_size("other") == 12  # falls back to the global batch size
    # the default space is still there
    assert s.spaces["clip"].model == "ViT-B-32"


def test_space_batch_size_overrides_global(tmp_path: Path) -> None:
    body = "[spaces.clip]\nbatch_size = 4\n"
    s = load_settings(config_file=write_toml(tmp_path, body), env={})
    assert s.space_batch_size("clip") == 4


@pytest.mark.parametrize("name", ["Clip", "my-space", "1clip"])
def test_bad_space_names_raise(tmp_path: Path, name: str) -> None:
    body = f'[spaces."{name}"]\nmodel = "RN50"\n'
    with pytest.raises(ConfigError, match="space name"):
        load_settings(config_file=write_toml(tmp_path, body), env={})


# --------------------------------------------------------------------------- invalid values


def test_unknown_top_level_key_raises(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "batch_sise = 32\n")
    with pytest.raises(ConfigError, match="batch_sise") as info:
        load_settings(config_file=path, env={})
    assert info.value.remedies  # tells the user a way out


def test_unknown_space_key_raises(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[spaces.clip]\nmodle = 'RN50'\n")
    with pytest.raises(ConfigError, match="modle"):
        load_settings(config_file=path, env={})


def test_batch_size_zero_raises(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "batch_size = 0\n")
    with pytest.raises(ConfigError, match="batch_size"):
        load_settings(config_file=path, env={})


@pytest.mark.parametrize(
    "body",
    [
        "workers = 0\n",
        "max_image_pixels = -1\n",
        'device = "gpu"\n',
        'include = "*.jpg"\n',
        "[spaces.clip]\nbatch_size = 0\n",
        "[spaces.clip]\nchunk_overlap = -1\n",
    ],
)
def test_invalid_values_raise(tmp_path: Path, body: str) -> None:
    with pytest.raises(ConfigError, match="invalid settings"):
        load_settings(config_file=write_toml(tmp_path, body), env={})
