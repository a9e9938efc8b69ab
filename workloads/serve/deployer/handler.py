"""The deployer Lambda's entry point (handler `handler.handler`); the work is in deployer.py.

Events and what they do are described in deployer.py and docs/contracts.md. An exception here makes
Lambda retry the asynchronous invocation, which is what a throttled or half-done deployment needs:
every step is idempotent.
"""

from __future__ import annotations

import json
from typing import Any

try:  # in the Lambda zip, deployer.py sits next to this file at the top level
    import deployer  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # imported as workloads.serve.deployer.handler (tests, deploy.py)
    from workloads.serve.deployer import deployer


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    config = deployer.DeployerConfig.from_env()
    result = deployer.Deployer(config, in_lambda=True).handle(event)
    print(json.dumps({"event": event.get("detail-type") or "lifecycle", "result": result}, default=str))
    return result
