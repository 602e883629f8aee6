"""The README's shell examples of the command line run as written (so that they never rot).

The Quickstart, "The command line" and "Connectors" blocks run in order through bash, on
a fresh data directory, each command checked (``set -e``); ``--follow`` (which waits for
ever) and the venv activation are left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"
SECTIONS = ("## Quickstart", "## The command line", "## Connectors")


def shell_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(section + "\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```sh\n(.*?)```", text[start : end if end != -1 else None], re.DOTALL)


def test_the_command_line_examples_run(tmp_path: Path) -> None:
    script = ["set -e -o pipefail"]
    for section in SECTIONS:
        (block,) = shell_blocks(section)
        for line in block.splitlines():
            if "--follow" in line or "activate" in line:
                continue
            script.append(line)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["HEADWATER_DATA"] = str(tmp_path / "data")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert '{"user":"ada","page":"/"}' in out  # consume --from earliest
    assert '"headers":[["source","web"]]' in out  # consume --format json
    assert "headwater: skipped line 2: invalid JSON" in result.stderr
    assert re.search(r"^clicks/0/0 ", out, re.MULTILINE)  # the template
    assert "changed topic 'clicks': retention_ms 86400000 -> 3600000" in result.stderr
    assert '["headwater.line","3"]' in out  # the dead letter's line number
    assert '{"user":"ada","ms":120}\n{"user":"bob","ms":80}\n' in out  # the final file
