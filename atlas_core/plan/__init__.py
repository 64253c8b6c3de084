"""Planning a run before it starts (``atlas plan``): work, memory, GPUs and time per experiment.

``models`` builds any config on the meta device, ``workload`` counts each experiment's FLOP with ``atlas_core.work``'s
coefficients, ``memory`` sizes a replica, ``timing`` reads achieved rates off measured runs, ``build`` assembles
the plan's rows; the CLI only formats them.
"""
