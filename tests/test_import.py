"""``import compress`` must stay light: no heavy or optional backend is imported."""

import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "transformers", "torchvision", "tensorrt", "onnx", "matplotlib")


def test_import_compress_imports_nothing_heavy() -> None:
    code = f"import sys, compress; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"import compress loaded: {loaded.stdout.strip()}"


def test_cli_module_import_skips_optional_backends() -> None:
    code = (
        "import sys, compress.cli.main; "
        f"print(','.join(m for m in {HEAVY[1:]!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"importing the CLI loaded: {loaded.stdout.strip()}"
