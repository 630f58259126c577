"""What Dagster's Helm chart (1.13) accepts, for the parts of its values this project sets.

Transcribed from the chart's own schema (the pydantic models under helm/dagster/schema/ in
dagster-io/dagster, from which its values.schema.json is generated), so deploy/helm-values.yaml
is checked without helm or a cluster: unknown keys, wrong enum values and wrong scalar types
fail with the path. A leaf is a type, a set of allowed values, or ANY (not checked further).
"""

from __future__ import annotations

from typing import Any

ANY = object()

_IMAGE = {"repository": str, "tag": str, "pullPolicy": {"Always", "IfNotPresent", "Never"}}
_SECRET_REFS = [{"name": str}]
_ENV_VAR = {"name": str, "value": str, "valueFrom": ANY}

_USER_DEPLOYMENT = {
    "name": str, "image": _IMAGE, "dagsterApiGrpcArgs": [str], "codeServerArgs": [str],
    "includeConfigInLaunchedRuns": {"enabled": bool}, "port": int, "env": [_ENV_VAR],
    "envConfigMaps": _SECRET_REFS, "envSecrets": _SECRET_REFS, "annotations": ANY,
    "nodeSelector": ANY, "affinity": ANY, "tolerations": ANY, "podSecurityContext": ANY,
    "securityContext": ANY, "resources": ANY, "livenessProbe": ANY, "readinessProbe": ANY,
    "startupProbe": ANY, "labels": ANY, "volumeMounts": ANY, "volumes": ANY,
    "schedulerName": str,
}

_K8S_RUN_LAUNCHER = {
    "image": _IMAGE, "imagePullPolicy": {"Always", "IfNotPresent", "Never"}, "jobNamespace": str,
    "loadInclusterConfig": bool, "kubeconfigFile": str, "envConfigMaps": _SECRET_REFS,
    "envSecrets": _SECRET_REFS, "envVars": [str], "volumeMounts": ANY, "volumes": ANY,
    "labels": ANY, "failPodOnRunFailure": bool, "resources": ANY, "schedulerName": str,
    "securityContext": ANY,
    "runK8sConfig": {"containerConfig": ANY, "podSpecConfig": ANY,
                     "podTemplateSpecMetadata": ANY, "jobSpecConfig": ANY, "jobMetadata": ANY},
}

_S3_COMPUTE_LOGS = {
    "bucket": str, "localDir": str, "prefix": str, "useSsl": bool, "verify": bool,
    "verifyCertPath": str, "endpointUrl": str, "skipEmptyFiles": bool, "uploadInterval": int,
    "uploadExtraArgs": ANY, "showUrlOnly": bool, "region": str,
}

_THREADS = {"useThreads": bool, "numWorkers": int, "numSubmitWorkers": int}

VALUES: dict[str, Any] = {
    "global": {"postgresqlSecretName": str, "dagsterHome": str, "serviceAccountName": str,
               "celeryConfigSecretName": str},
    "dagster-user-deployments": {"enabled": bool, "enableSubchart": bool,
                                 "imagePullSecrets": _SECRET_REFS,
                                 "deployments": [_USER_DEPLOYMENT]},
    "runLauncher": {
        "type": {"CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"},
        "config": {"celeryK8sRunLauncher": ANY, "k8sRunLauncher": _K8S_RUN_LAUNCHER,
                   "customRunLauncher": ANY},
    },
    "postgresql": {"image": ANY, "enabled": bool, "postgresqlHost": str,
                   "postgresqlUsername": str, "postgresqlPassword": str,
                   "postgresqlDatabase": str, "postgresqlParams": ANY, "postgresqlScheme": str,
                   "service": {"port": int}},
    "generatePostgresqlPasswordSecret": bool,
    "generateCeleryConfigSecret": bool,
    "computeLogManager": {
        "type": {"NoOpComputeLogManager", "AzureBlobComputeLogManager", "GCSComputeLogManager",
                 "S3ComputeLogManager", "CustomComputeLogManager"},
        "config": {"azureBlobComputeLogManager": ANY, "gcsComputeLogManager": ANY,
                   "s3ComputeLogManager": _S3_COMPUTE_LOGS, "customComputeLogManager": ANY},
    },
    "rabbitmq": ANY, "redis": ANY, "flower": ANY, "ingress": ANY, "imagePullSecrets": ANY,
    "dagsterWebserver": ANY, "scheduler": ANY, "busybox": ANY, "migrate": ANY,
    "serviceAccount": ANY, "retention": ANY, "concurrency": ANY,
    "dagsterDaemon": {
        "enabled": bool, "image": _IMAGE, "heartbeatTolerance": int,
        "runCoordinator": {
            "enabled": bool, "type": {"QueuedRunCoordinator", "CustomRunCoordinator"},
            "config": {"queuedRunCoordinator": {
                "maxConcurrentRuns": int, "tagConcurrencyLimits": ANY,
                "dequeueIntervalSeconds": int, "dequeueNumWorkers": int,
                "dequeueUseThreads": bool}, "customRunCoordinator": ANY},
        },
        "env": ANY, "envConfigMaps": _SECRET_REFS, "envSecrets": _SECRET_REFS,
        "deploymentLabels": ANY, "labels": ANY, "nodeSelector": ANY, "affinity": ANY,
        "tolerations": ANY, "podSecurityContext": ANY, "securityContext": ANY, "resources": ANY,
        "livenessProbe": ANY, "readinessProbe": ANY, "startupProbe": ANY, "annotations": ANY,
        "runMonitoring": ANY, "runRetries": ANY, "sensors": _THREADS, "schedules": _THREADS,
        "schedulerName": str, "volumeMounts": ANY, "volumes": ANY,
    },
    "pythonLogs": {"pythonLogLevel": str, "managedPythonLoggers": [str],
                   "dagsterHandlerConfig": ANY},
    "telemetry": {"enabled": bool},
    "additionalInstanceConfig": ANY,
}


def problems(value: Any, schema: Any = None, path: str = "") -> list[str]:
    """Every place where `value` leaves the chart's schema, as 'path: what is wrong'."""
    schema = VALUES if schema is None else schema
    if schema is ANY:
        return []
    if isinstance(schema, set):
        return [] if value in schema else [f"{path}: {value!r} is not one of {sorted(schema)}"]
    if isinstance(schema, type):
        ok = isinstance(value, schema) and not (schema is int and isinstance(value, bool))
        return [] if ok else [f"{path}: expected {schema.__name__}, got {value!r}"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value) for p in problems(item, schema[0], f"{path}[{i}]")]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping"]
    found = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key not in schema:
            found.append(f"{where}: not a key of the chart (allowed: {', '.join(sorted(schema))})")
        else:
            found.extend(problems(item, schema[key], where))
    return found
