"""Generated protobuf modules for Cursor's agent.v1 and aiserver.v1 wire schema.

Produced by scripts/gen_protos.py from protos/ (a subset of agent-v1.schema.txt); never edit.
Import as ``from cursorpipe._proto.agent.v1 import agent_pb2``.
"""
