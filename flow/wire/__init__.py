"""Pure conversions between SDK and core values and the contract (flowapi.v1): one module per
resource, both directions, and for each call the SDK makes an encoded `Call` (calls.py) that
reads its reply into an SDK value. Besides these, only the transports (flow.transport) and flowd's
RPC layer touch generated messages (an import-linter contract in pyproject.toml keeps it so).

Values that flowd and the SDK share (TaskConfig, Volume, FunctionResult, ...) are the core's;
values only a client reads (TaskSnapshot, DaemonInfo, LogChunk, ExecOutput, ...) are defined here,
next to the converter that produces them."""
