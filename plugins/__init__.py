"""KernelNotes' plugin system (imported as `kernelnotes.plugins`): hook specs, the manager, built-ins."""
