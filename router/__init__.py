"""Router stage: quotes both venues for each accepted order and routes it to the better net price."""
