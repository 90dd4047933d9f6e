"""Everything that talks to or runs a tritonserver."""
