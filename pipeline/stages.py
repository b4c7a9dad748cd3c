"""Which stages exist and where each one's entry point is; imported only when chosen.

The CLI runs them (`pipeline run STAGE`) and the sandbox starts them all, from this one list.
"""

from __future__ import annotations

# name -> "module:function"; the function takes Settings and returns the exit code.
STAGES: dict[str, str] = {
    "router": "pipeline.router:main",
    "launcher": "pipeline.launcher.stage:main",
    "watcher": "pipeline.watcher.stage:main",
    "celery-dispatcher": "pipeline.celery_bridge.dispatcher:main",
    "celery-monitor": "pipeline.celery_bridge.monitor:main",
    "reducer": "pipeline.reducer.app:main",
}
