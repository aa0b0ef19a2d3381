"""The tooling around the runtime SDK: training, export and engines, benchmarks.

Installed with the development extras; the runtime (`facemask_sdk`) never imports it. Its commands
join `facemask-sdk` through the `facemask_sdk.commands` entry points.
"""
