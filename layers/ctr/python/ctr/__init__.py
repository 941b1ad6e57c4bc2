"""ctr: the domain package of ctr-pipeline.

Shipped to every Lambda function as the `ctr` layer and installed (editable) in the
dev environment. Handlers in functions/ are thin: they parse an event, call one
function from here, and return. Modules take their AWS/MLflow clients as arguments.
"""

__version__ = "0.1.0"
