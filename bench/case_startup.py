"""Case 4, start-up: ``retention --help`` and ``retention status`` as a fresh process.

Each command runs as a new process, alternating with its peers, ``repeat`` x 2 times. The
peers: ``python -c pass`` (the interpreter's own floor on this machine) and ``celery
--help`` (the task-queue CLI the worker itself runs under). ``status`` reads a SQLite
ledger of 1,000 jobs. The wall time is reported with the process's own CPU time (user +
system, from os.wait4), which a busy machine inflates less than the wall time.

The modules each command imported are read from ``-X importtime``, to show that boto3,
botocore, Celery, structlog and rich stay off these paths.

The package is byte-compiled first, as ``pip install`` and the image do: in a checkout run
with PYTHONDONTWRITEBYTECODE, every command would otherwise compile the project's modules
again (about 45 ms here).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.util import Sample, describe, python, run_measured, table, verdict

TARGET = 0.5
HEAVY = ("boto3", "botocore", "celery", "kombu", "structlog", "rich", "httpx", "alembic")
JOBS = 1000


def _config(work: Path) -> Path:
    """A configuration with two providers and a SQLite ledger of JOBS jobs."""
    from bench.case_scale import _fill, _rows

    ledger = f"sqlite:///{work / 'ledger.db'}"
    _fill(ledger, _rows(JOBS, all_due=False)).engine.dispose()
    path = work / "retention.toml"
    path.write_text(
        f"""
[archive]
bucket = "bench-startup"

[ledger]
url = "{ledger}"

[broker]
url = "redis://127.0.0.1:6379/15"

[providers.daily]
type = "daily"
api_key = "bench-not-a-secret"

[providers.loom]
type = "loom"
base_url = "https://claudio.example.com"
key = "bench-not-a-secret"
secret = "bench-not-a-secret"
"""
    )
    return path


# Runs a module as ``python -m`` would, then names on stderr every module it left loaded. An
# attempt that failed (worker.logging hides rich from structlog) is not an import; -X
# importtime would list it.
_LOADED = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('LOADED', *sorted(k for k, v in sys.modules.items() "
    "if v is not None), file=sys.__stderr__))\n"
    "module = sys.argv.pop(1)\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def _imported(argv: list[str], env: dict[str, str]) -> set[str]:
    """Top-level packages a command (``["-m", module, *args]``) has loaded when it exits."""
    assert argv[0] == "-m", argv
    child = run_measured([python(), "-c", _LOADED, *argv[1:]], env=env)
    names: set[str] = set()
    for line in child.stderr.splitlines():
        if line.startswith("LOADED "):
            names.update(name.split(".")[0] for name in line.split()[1:])
    return names


def _compile_package() -> None:
    import compileall

    import worker

    compileall.compile_dir(Path(worker.__file__).parent, quiet=1)


def run(options: Any) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    _compile_package()
    try:
        config = _config(work)
        env = {"RETENTION_CONFIG": str(config), "NO_COLOR": "1"}
        retention = str(Path(python()).with_name("retention"))
        celery = str(Path(python()).with_name("celery"))
        commands: dict[str, list[str]] = {
            "retention --help": [retention, "--help"],
            f"retention status ({JOBS:,} jobs)": [retention, "status"],
            "python -c pass (floor)": [python(), "-c", "pass"],
            "celery --help (peer)": [celery, "--help"],
        }
        wall = {name: Sample() for name in commands}
        cpu = {name: Sample() for name in commands}
        failures: dict[str, str] = {}
        for argv in commands.values():  # warm the page cache once
            run_measured(argv, env=env)
        for _ in range(max(3, options.repeat * 2)):
            for name, argv in commands.items():
                child = run_measured(argv, env=env)
                if child.code != 0:
                    failures[name] = (child.stderr.strip().splitlines() or ["no output"])[0][:120]
                wall[name].add(child.wall)
                cpu[name].add(child.user + child.system)
        heavy = {
            "retention --help": sorted(set(HEAVY) & _imported(["-m", "worker.cli", "--help"], env)),
            "retention status": sorted(set(HEAVY) & _imported(["-m", "worker.cli", "status"], env)),
        }
        rows = []
        for name in commands:
            project = name.startswith("retention")
            rows.append(
                [
                    name,
                    describe(wall[name]),
                    describe(cpu[name]),
                    verdict(wall[name].median < TARGET) if project else "-",
                    failures.get(name, "ok"),
                ]
            )
        print(
            table(
                "4. Start-up, a fresh process each time, alternating "
                f"(n={wall['retention --help'].n})",
                ["command", "wall median [min..max]", "CPU user+sys", f"< {TARGET} s", "result"],
                rows,
            )
        )
        for name, modules in heavy.items():
            print(
                f"{name} imports {', '.join(modules) or 'none'} of {', '.join(HEAVY)} "
                f"({verdict(not modules)} 'heavy imports kept off')"
            )
        return {
            "wall": {name: s.as_dict() for name, s in wall.items()},
            "cpu": {name: s.as_dict() for name, s in cpu.items()},
            "heavy_imports": heavy,
            "failures": failures,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
