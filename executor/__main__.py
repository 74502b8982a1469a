"""`python -m executor`: run the executor stage as a faust worker."""

from executor.agents import app

app.run_worker()
