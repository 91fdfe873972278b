import os
import subprocess
import sys

import dotsocr


def test_every_exported_name_resolves():
    # (ruff's RUF022 keeps __all__ sorted)
    for name in dotsocr.__all__:
        assert getattr(dotsocr, name) is not None


def test_every_lazy_export_is_listed():
    assert set(dotsocr.__all__) == {*dotsocr._EXPORTS, "__version__"}


def test_cli_startup_does_not_load_heavy_libraries():
    heavy = "('PIL', 'pypdfium2', 'pydantic')"
    code = f"import sys, dotsocr.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_regen_flag_is_not_left_on():
    # Golden files must only be rewritten on purpose, never by a CI or default run.
    assert os.environ.get("DOTSOCR_REGEN") != "1"
