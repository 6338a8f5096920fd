"""Bad input: a one-line message naming the problem and the fix, exit status 2, no traceback."""

from pathlib import Path

import pytest
import torch

from tests.helpers.sources import TINY_MODEL_SOURCE


def assert_user_error(result, *fragments: str) -> None:
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {result.err!r}"
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def test_missing_factory_file(cli, tmp_path: Path) -> None:
    result = cli("eval", f"{tmp_path}/absent.py:make", "--data", "builtin:digits")
    assert_user_error(result, "file not found", "absent.py")


def test_missing_saved_model_file(cli, tmp_path: Path) -> None:
    assert_user_error(cli("eval", f"{tmp_path}/absent.pt", "--data", "builtin:digits"), "not found")


def test_missing_weights_file(cli, factory_file, tmp_path: Path) -> None:
    path = factory_file(TINY_MODEL_SOURCE)
    result = cli("eval", f"{path}:tiny", "--weights", f"{tmp_path}/none.pt", "--data", "builtin:digits")
    assert_user_error(result, "weights file not found")


def test_missing_data_folder(cli, factory_file, tmp_path: Path) -> None:
    result = cli("eval", f"{factory_file(TINY_MODEL_SOURCE)}:tiny", "--data", f"{tmp_path}/nowhere")
    assert_user_error(result, "data not found")


@pytest.mark.parametrize("spec", ["mnist-cnn", "builtin", "hub:resnet", "model.py:not-a-name"])
def test_model_spec_with_bad_syntax(cli, spec: str) -> None:
    result = cli("eval", spec, "--data", "builtin:digits")
    assert_user_error(result, "spec")


def test_unknown_builtin_lists_the_available_ones(cli) -> None:
    assert_user_error(cli("eval", "builtin:resnet9000", "--data", "builtin:digits"), "mnist-cnn", "minilm")


def test_unknown_builtin_data(cli, factory_file) -> None:
    result = cli("eval", f"{factory_file(TINY_MODEL_SOURCE)}:tiny", "--data", "builtin:cifar")
    assert_user_error(result, "unknown builtin data", "mnist5k")


def test_factory_that_does_not_exist(cli, factory_file) -> None:
    result = cli("eval", f"{factory_file(TINY_MODEL_SOURCE)}:missing", "--data", "builtin:digits")
    assert_user_error(result, "no callable named 'missing'", "tiny")


def test_factory_that_does_not_return_a_module(cli, factory_file) -> None:
    result = cli("eval", f"{factory_file(TINY_MODEL_SOURCE)}:not_a_module", "--data", "builtin:digits")
    assert_user_error(result, "returned int", "nn.Module")


def test_factory_file_that_fails_to_import(cli, factory_file) -> None:
    path = factory_file("def broken(:\n", name="broken.py")
    assert_user_error(cli("eval", f"{path}:broken", "--data", "builtin:digits"), "SyntaxError")


def test_weights_that_do_not_fit(cli, factory_file, tmp_path: Path) -> None:
    weights = tmp_path / "wrong.pt"
    torch.save(torch.nn.Linear(32, 10).state_dict(), weights)
    path = factory_file(TINY_MODEL_SOURCE)
    result = cli("eval", f"{path}:tiny", "--weights", str(weights), "--data", "builtin:digits")
    assert_user_error(result, "do not fit", "missing", "unexpected")


def test_weights_with_a_wrong_shape(cli, factory_file, tmp_path: Path) -> None:
    weights = tmp_path / "shape.pt"
    wrong = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 7))
    torch.save(wrong.state_dict(), weights)
    result = cli("eval", f"{factory_file(TINY_MODEL_SOURCE)}:tiny", "--weights", str(weights), "--data", "builtin:digits")
    assert_user_error(result, "another shape", "1.bias", "(7,)", "(10,)")


def test_weights_file_that_is_not_a_state_dict(cli, factory_file, tmp_path: Path) -> None:
    weights = tmp_path / "junk.pt"
    weights.write_bytes(b"not a checkpoint")
    result = cli("eval", f"{factory_file(TINY_MODEL_SOURCE)}:tiny", "--weights", str(weights), "--data", "builtin:digits")
    assert_user_error(result, "cannot read weights")


def test_state_dict_given_as_a_model(cli, tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    assert_user_error(cli("eval", str(path), "--data", "builtin:digits"), "--weights")


def test_data_whose_shape_does_not_fit(cli, factory_file) -> None:
    result = cli("eval", f"{factory_file(TINY_MODEL_SOURCE)}:tiny", "--data", "builtin:mnist5k")
    assert_user_error(result, "does not fit model", "(64, 1, 28, 28)")


def test_data_factory_with_wrong_return_type(cli, factory_file) -> None:
    path = factory_file(TINY_MODEL_SOURCE)
    result = cli("eval", f"{path}:tiny", "--data", f"{path}:not_a_module")
    assert_user_error(result, "returned int", "(inputs, targets)")


def test_debug_shows_the_traceback(cli, factory_file) -> None:
    result = cli("eval", f"{factory_file(TINY_MODEL_SOURCE)}:missing", "--data", "builtin:digits", "--debug")
    assert result.code == 2
    assert "Traceback" in result.err


def test_console_script_exits_2_without_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(sys.executable).with_name("compress")
    run = subprocess.run([str(script), "eval", "nonsense", "--data", "builtin:digits"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
