"""Entry point for `uvicorn app:app`: the service configured from the environment and `.env`."""

from leitstand.app import create_app, tune_process
from leitstand.config import load_settings

app = create_app(load_settings())
tune_process()
