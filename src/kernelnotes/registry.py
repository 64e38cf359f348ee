"""Collects the kernels every plugin registers into one name -> KernelSpec mapping."""

from __future__ import annotations

from typing import Any

import pluggy

from kernelnotes.kernelspec import KernelSpec


class KernelRegistryError(ValueError):
    pass


def load_kernels(pm: pluggy.PluginManager) -> dict[str, KernelSpec]:
    """Return all registered kernels by name; a name registered twice is an error naming both."""
    kernels: dict[str, KernelSpec] = {}
    owners: dict[str, str] = {}
    # get_hookimpls() lists implementations in registration order (pluggy calls them in reverse):
    # built-ins come first, and each result stays paired with the plugin that returned it.
    for impl in pm.hook.register_kernels.get_hookimpls():
        specs: Any = impl.function() or []
        for spec in specs:
            if not isinstance(spec, KernelSpec):
                raise KernelRegistryError(
                    f"plugin {impl.plugin_name!r} registered {spec!r}, not a KernelSpec"
                )
            if spec.name in kernels:
                raise KernelRegistryError(
                    f"kernel {spec.name!r} registered by both {owners[spec.name]!r} and {impl.plugin_name!r}"
                )
            kernels[spec.name] = spec
            owners[spec.name] = impl.plugin_name
    return kernels
