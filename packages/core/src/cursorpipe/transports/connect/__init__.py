"""Connect transport: Cursor's cloud API over Connect-RPC (owner: helper "connect")."""
