"""Run-dir safety: one train process per run dir (`run_lock`), SIGINT / SIGTERM stop a run at
its next saved point (`interrupts`), and the test-only kill points that crash a run on purpose
(`kill_points`). Import the submodules."""
