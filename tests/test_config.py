"""Loading anprd's YAML config: valid files, and one clear line for every kind of mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import without_root_file_access

from anprd.config import (
    AnprdConfig,
    CameraConfig,
    ConfigError,
    ReplayPace,
    SourceKind,
    config_reference_markdown,
    load_config,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

VALID_CONFIG = """\
cameras:
  - id: gate-1
    url: rtsp://admin:secret@192.168.1.20:554/Streaming/Channels/101
    queue_size: 3
    max_fps: 10
    mask:
      - [[0, 0], [100, 0], [100, 50]]
  - id: replay_2
    url: videos/test.avi
    replay_pace: fast
    loop: true
  - id: webcam
    url: 0
"""


def write_config(directory: Path, text: str, name: str = "config.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "\n" not in message, "a ConfigError must be one line"
    return message


def test_valid_config_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, VALID_CONFIG))

    assert isinstance(config, AnprdConfig)
    gate, replay, webcam = config.cameras
    assert (gate.id, gate.queue_size, gate.max_fps) == ("gate-1", 3, 10.0)
    assert gate.kind is SourceKind.RTSP
    assert gate.mask == [[(0.0, 0.0), (100.0, 0.0), (100.0, 50.0)]]
    assert gate.open_timeout_s == 5.0 and gate.read_timeout_s == 3.0
    assert (gate.reconnect_backoff_min_s, gate.reconnect_backoff_max_s) == (1.0, 30.0)
    # Relative paths are relative to the config file, not to the working directory.
    assert replay.url == str(tmp_path / "videos" / "test.avi")
    assert replay.kind is SourceKind.FILE
    assert replay.replay_pace is ReplayPace.FAST and replay.loop
    assert webcam.url == "0" and webcam.kind is SourceKind.WEBCAM
    assert webcam.replay_pace is ReplayPace.REALTIME and not webcam.loop
    # Sections left out take their defaults.
    assert config.tracker == type(config.tracker)()
    assert config.publisher == type(config.publisher)()


def test_image_folder_url_is_a_folder_source(tmp_path: Path) -> None:
    (tmp_path / "shots").mkdir()
    config = load_config(write_config(tmp_path, "cameras: [{id: shots, url: shots}]\n"))
    assert config.cameras[0].kind is SourceKind.FOLDER


def test_bad_value_names_file_key_and_value(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "cameras:\n  - id: a\n    url: rtsp://cam/1\n    queue_size: 0\n"
    )
    assert config_error(path) == (
        f"{path}: cameras.0.queue_size: input should be greater than or equal to 1 (got 0)"
    )


def test_a_home_folder_of_an_unknown_user_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "cameras:\n  - id: a\n    url: ~no-such-user-anprd/clip.mp4\n")
    message = config_error(path)
    assert message.startswith(f"{path}: cameras.0.url: ") and "~no-such-user-anprd/clip.mp4" in message


def test_a_path_this_user_may_not_look_into_is_a_config_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    path = write_config(tmp_path, "cameras:\n  - id: a\n    url: locked/clip.mp4\n")
    check = (f"from anprd.config import ConfigError, load_config\n"
             f"try:\n    load_config({str(path)!r})\nexcept ConfigError as exc:\n    print(exc)\n")
    drop = without_root_file_access(locked)  # root looks into anything: drop that right
    result = subprocess.run([*drop, sys.executable, "-c", check], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.strip() == (f"{path}: cameras.0.url: cannot look at {locked / 'clip.mp4'}: "
                                     "Permission denied (got 'locked/clip.mp4')")


def test_a_password_in_a_wrongly_typed_value_is_masked(tmp_path: Path) -> None:
    path = write_config(tmp_path, "cameras:\n  - id: a\n    url: [rtsp://admin:s3cret@10.0.0.5/x]\n")
    message = config_error(path)
    assert "cameras.0.url" in message and "s3cret" not in message and "admin:***@" in message


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "cameras: [{id: a, url: rtsp://cam/1}]\ntracker:\n  iuo_threshold: 0.3\n",
    )
    assert config_error(path) == f"{path}: tracker.iuo_threshold: unknown key"


def test_unknown_top_level_section_is_named(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "cameras: [{id: a, url: rtsp://cam/1}]\ndetectors: {}\n"
    )
    assert config_error(path) == f"{path}: detectors: unknown key"


def test_wrong_type_names_file_key_and_value(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "cameras: [{id: a, url: rtsp://cam/1, read_timeout_s: soon}]\n"
    )
    message = config_error(path)
    assert message.startswith(
        f"{path}: cameras.0.read_timeout_s: input should be a valid number"
    )
    assert message.endswith("(got 'soon')")


def test_bad_choice_lists_the_choices(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "cameras: [{id: a, url: clip.mp4, replay_pace: slow}]\n"
    )
    assert config_error(path) == (
        f"{path}: cameras.0.replay_pace: input should be 'realtime' or 'fast' (got 'slow')"
    )


def test_missing_cameras_and_empty_cameras(tmp_path: Path) -> None:
    assert config_error(write_config(tmp_path, "tracker: {}\n", "a.yaml")).endswith(
        "a.yaml: cameras: required key is missing"
    )
    message = config_error(write_config(tmp_path, "cameras: []\n", "b.yaml"))
    assert message.endswith(
        "b.yaml: cameras: list should have at least 1 item after validation, not 0 (got [])"
    )


def test_bad_camera_id_is_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path, "cameras: [{id: 'gate 1', url: rtsp://cam/1}]\n")
    message = config_error(path)
    assert message.startswith(f"{path}: cameras.0.id: string should match pattern")
    assert message.endswith("(got 'gate 1')")


def test_duplicate_camera_ids_name_the_second(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "cameras:\n  - {id: gate, url: rtsp://cam/1}\n  - {id: gate, url: rtsp://cam/2}\n",
    )
    assert config_error(path) == (
        f"{path}: cameras.1.id: duplicate camera id (also cameras.0.id) (got 'gate')"
    )


def test_cross_field_rules_name_the_key(tmp_path: Path) -> None:
    backoff = write_config(
        tmp_path,
        "cameras: [{id: a, url: rtsp://cam/1, reconnect_backoff_min_s: 60}]\n",
        "backoff.yaml",
    )
    assert config_error(backoff) == (
        f"{backoff}: cameras.0.reconnect_backoff_min_s: must not exceed "
        "reconnect_backoff_max_s (30) (got 60.0)"
    )
    loop = write_config(
        tmp_path, "cameras: [{id: a, url: rtsp://cam/1, loop: true}]\n", "l.yaml"
    )
    assert config_error(loop) == (
        f"{loop}: cameras.0.loop: applies only to video files and image folders (got true)"
    )


def test_url_errors_never_show_the_password(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "cameras: [{id: a, url: 'ftp://admin:hunter2@cam/x'}]\n"
    )
    message = config_error(path)
    assert message == (
        f"{path}: cameras.0.url: unsupported scheme 'ftp' (use rtsp, rtsps, http or https) "
        "(got 'ftp://admin:***@cam/x')"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert config_error(path) == f"{path}: file not found"


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "cameras:\n  - id: a\n    url: [unclosed\ntracker: {}\n"
    )
    message = config_error(path)
    assert message.startswith(f"{path}: YAML syntax error at line 4")


ONE_CAMERA = "cameras: [{id: a, url: rtsp://cam/1}]\n"


def test_a_key_given_twice_is_an_error_not_a_silent_overwrite(tmp_path: Path) -> None:
    # PyYAML keeps the last of two `detector:` sections, which would drop the first one's settings
    path = write_config(tmp_path, "cameras: [{id: a, url: rtsp://cam/1}]\n"
                                  "detector: {min_confidence: 0.5}\ndetector: {threads: 1}\n")
    assert config_error(path) == (f"{path}: YAML error at line 3, column 1: "
                                  "key 'detector' is given twice in one mapping")


@pytest.mark.parametrize(("section", "value"), [
    ("tracker: {iou_weight: .inf}", "Infinity"),  # an infinite cost weight suppressed every event
    ("tracker: {fusion_log_floor: -.inf}", "-Infinity"),
    ("tracker: {max_age_s: .nan}", "NaN"),
])
def test_infinite_and_nan_numbers_are_refused(tmp_path: Path, section: str, value: str) -> None:
    path = write_config(tmp_path, f"cameras: [{{id: a, url: rtsp://cam/1}}]\n{section}\n")
    key = section.split(": {")[0] + "." + section.split("{")[1].split(":")[0]
    assert config_error(path) == f"{path}: {key}: input should be a finite number (got {value})"


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:99999", "tcp://127.0.0.1:0", "tcp://127.0.0.1"])
def test_a_tcp_endpoint_needs_a_real_port(tmp_path: Path, endpoint: str) -> None:
    # ZeroMQ binds port 99999 as 34463 (modulo 65536), where no subscriber would look
    path = write_config(tmp_path, f"{ONE_CAMERA}publisher: {{endpoint: '{endpoint}'}}\n")
    assert config_error(path) == (f"{path}: publisher.endpoint: a tcp:// endpoint needs a port from 1 to "
                                  f"65535, or * for any free port (got '{endpoint}')")


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:*", "tcp://[::1]:65535", "ipc:///run/anprd/events"])
def test_good_endpoints_load(tmp_path: Path, endpoint: str) -> None:
    path = write_config(tmp_path, f"{ONE_CAMERA}publisher: {{endpoint: '{endpoint}'}}\n")
    assert load_config(path).publisher.endpoint == endpoint


def test_a_nul_character_in_a_camera_url_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'cameras: [{id: a, url: "/tmp/a\\0b"}]\n')
    assert config_error(path) == f"{path}: cameras.0.url: contains a NUL character (got '/tmp/a\\x00b')"


def test_messages_keep_an_acronym_and_say_the_value_once(tmp_path: Path) -> None:
    path = write_config(tmp_path, "cameras: [{id: a, url: 'rtsp://'}]\n")
    assert config_error(path) == f"{path}: cameras.0.url: URL has no host (got 'rtsp://')"
    path = write_config(tmp_path, "cameras: [{id: a, url: rtsp://cam/1}]\nmetrics: {address: localhost}\n")
    assert config_error(path) == (f"{path}: metrics.address: must be an IP address (a host name is not "
                                  "resolved here) (got 'localhost')")


@pytest.mark.parametrize(
    ("text", "found"), [("", "an empty file"), ("- a\n- b\n", "a list")]
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    path = write_config(tmp_path, text)
    assert (
        config_error(path)
        == f"{path}: top level must be a mapping of sections, found {found}"
    )


def test_several_errors_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "cameras: [{id: a, url: rtsp://cam/1, queue_size: 0, open_timeout_s: -1}]\n",
    )
    message = config_error(path)
    assert message.startswith(f"{path}: cameras.0.queue_size:")
    assert message.endswith("[and 1 more error]")


def test_camera_config_is_immutable() -> None:
    camera = CameraConfig(id="a", url="rtsp://cam/1")
    with pytest.raises(ValueError, match="frozen"):
        camera.queue_size = 5  # type: ignore[misc]


def test_config_reference_lists_every_camera_key() -> None:
    reference = config_reference_markdown()
    lines = reference.splitlines()
    assert lines[0] == "| Key | Type | Default | Description |"
    for key in CameraConfig.model_fields:
        assert any(line.startswith(f"| `cameras[].{key}` |") for line in lines), key
    assert "| `cameras[].queue_size` | integer ≥ 1 | `2` |" in reference
    for section in ("detector", "tracker", "publisher", "metrics", "logging", "notify"):
        assert any(line.startswith(f"| `{section}` |") for line in lines), section
    # Every row has exactly four cells (pipes inside cells are escaped).
    for line in lines:
        assert line.replace("\\|", "").count("|") == 5, line


def test_config_reference_script_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "config_reference.py")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == config_reference_markdown()


def test_docs_hold_the_generated_config_reference() -> None:
    # docs/configuration.md must not drift from the config models: regenerate it with
    # `python scripts/config_reference.py --write`
    reference = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert config_reference_markdown() in reference
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_bundled_configs_load() -> None:
    """config.yaml (make run) and config.example.yaml (make install) must stay valid."""
    repo = Path(__file__).resolve().parent.parent
    assert load_config(repo / "config.yaml").cameras[0].id == "sample"
    assert load_config(repo / "config.example.yaml").publisher.spool_path is not None
