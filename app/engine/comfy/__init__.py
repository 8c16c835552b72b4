"""The ComfyUI backend: ComfyUI servers (local, on the network or rented) as engines.

client.py speaks ComfyUI's HTTP and websocket API and trusts nothing it is sent; workflow.py builds the API
graph of one pass; engine.py plans the job locally (app.engine.job_plan, as every backend), sends each
pass's crop and composites what comes back, spreading a request's variants over every server given.
"""
