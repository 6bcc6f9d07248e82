"""``polytask serve``: every served task of a trained model behind one HTTP endpoint.

Needs FastAPI and uvicorn (dependencies of polytask); imported lazily by the CLI.
"""

from polytask.serve.limits import Limits

__all__ = ["Limits"]
