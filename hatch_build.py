"""Generate Python from `proto/` at build time (the generated code is never committed).

Runs for wheels and for editable installs, so `pip install -e .` leaves `src/oa/_proto/`
ready to import. `python hatch_build.py` regenerates by hand after editing a .proto.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent
PROTO = ROOT / "proto"
OUT = ROOT / "src" / "oa" / "_proto"


def generate() -> None:
    from grpc_tools import protoc  # build-time only

    import grpc_tools

    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    OUT.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {files}")
    # Make every generated folder a package and re-root imports under oa._proto.
    for folder in [OUT, *[p for p in OUT.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    for py in OUT.rglob("*_pb2.py"):
        text = py.read_text()
        text = text.replace("from oa.", "from oa._proto.oa.")
        py.write_text(text)


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface

    class ProtoBuildHook(BuildHookInterface):  # type: ignore[type-arg]
        PLUGIN_NAME = "custom"

        def initialize(self, version: str, build_data: dict[str, Any]) -> None:
            generate()

except ImportError:  # pragma: no cover - only when run as a script without hatchling
    pass


if __name__ == "__main__":
    generate()
    sys.exit(0)
