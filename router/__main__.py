"""`python -m router`: run the router stage as a faust worker."""

from router.agents import app

app.run_worker()
