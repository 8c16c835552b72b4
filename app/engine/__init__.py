"""Generation engines. The core (request, events, engines, runner) imports no Qt; worker.py wraps it."""
