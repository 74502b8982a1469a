"""`python -m router`: run the router stage as a faust worker, on uvloop (as the HTTP services run)."""

import mode.loop

mode.loop.use("uvloop")  # before anything makes an event loop

from router.agents import app  # noqa: E402

app.run_worker()
