"""`python -m leitstand.openapi`: print the served OpenAPI document as YAML (docs/openapi.yaml)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .app import create_app
from .config import Settings


def document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(token="openapi", data_dir=Path(tmp))  # type: ignore[arg-type]
        return create_app(settings).openapi()


def main() -> None:
    yaml.safe_dump(document(), sys.stdout, sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    main()
