import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(_message.Message):
    __slots__ = ("id", "type", "shipment_ids", "target_status", "target_substatus", "work_duration", "state", "attempts", "progress_percent", "results", "error", "create_time", "start_time", "end_time", "worker", "simulated_duration", "cancel_requested")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Task.State]
        QUEUED: _ClassVar[Task.State]
        RUNNING: _ClassVar[Task.State]
        RETRYING: _ClassVar[Task.State]
        SUCCEEDED: _ClassVar[Task.State]
        FAILED: _ClassVar[Task.State]
        CANCELLED: _ClassVar[Task.State]
    STATE_UNSPECIFIED: Task.State
    QUEUED: Task.State
    RUNNING: Task.State
    RETRYING: Task.State
    SUCCEEDED: Task.State
    FAILED: Task.State
    CANCELLED: Task.State
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SHIPMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    TARGET_STATUS_FIELD_NUMBER: _ClassVar[int]
    TARGET_SUBSTATUS_FIELD_NUMBER: _ClassVar[int]
    WORK_DURATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_DURATION_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    shipment_ids: _containers.RepeatedScalarFieldContainer[str]
    target_status: str
    target_substatus: str
    work_duration: _duration_pb2.Duration
    state: Task.State
    attempts: int
    progress_percent: int
    results: _containers.RepeatedCompositeFieldContainer[ShipmentResult]
    error: _status_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    worker: str
    simulated_duration: DurationDistribution
    cancel_requested: bool
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., shipment_ids: _Optional[_Iterable[str]] = ..., target_status: _Optional[str] = ..., target_substatus: _Optional[str] = ..., work_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., state: _Optional[_Union[Task.State, str]] = ..., attempts: _Optional[int] = ..., progress_percent: _Optional[int] = ..., results: _Optional[_Iterable[_Union[ShipmentResult, _Mapping]]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., worker: _Optional[str] = ..., simulated_duration: _Optional[_Union[DurationDistribution, _Mapping]] = ..., cancel_requested: _Optional[bool] = ...) -> None: ...

class DurationDistribution(_message.Message):
    __slots__ = ("fixed", "uniform", "log_normal", "trace")
    FIXED_FIELD_NUMBER: _ClassVar[int]
    UNIFORM_FIELD_NUMBER: _ClassVar[int]
    LOG_NORMAL_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    fixed: _duration_pb2.Duration
    uniform: UniformDurations
    log_normal: LogNormalDurations
    trace: DurationTrace
    def __init__(self, fixed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., uniform: _Optional[_Union[UniformDurations, _Mapping]] = ..., log_normal: _Optional[_Union[LogNormalDurations, _Mapping]] = ..., trace: _Optional[_Union[DurationTrace, _Mapping]] = ...) -> None: ...

class UniformDurations(_message.Message):
    __slots__ = ("min", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: _duration_pb2.Duration
    max: _duration_pb2.Duration
    def __init__(self, min: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LogNormalDurations(_message.Message):
    __slots__ = ("median", "sigma")
    MEDIAN_FIELD_NUMBER: _ClassVar[int]
    SIGMA_FIELD_NUMBER: _ClassVar[int]
    median: _duration_pb2.Duration
    sigma: float
    def __init__(self, median: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., sigma: _Optional[float] = ...) -> None: ...

class DurationTrace(_message.Message):
    __slots__ = ("durations",)
    DURATIONS_FIELD_NUMBER: _ClassVar[int]
    durations: _containers.RepeatedCompositeFieldContainer[_duration_pb2.Duration]
    def __init__(self, durations: _Optional[_Iterable[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]]] = ...) -> None: ...

class ShipmentResult(_message.Message):
    __slots__ = ("shipment_id", "ok", "status", "error")
    SHIPMENT_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    shipment_id: str
    ok: bool
    status: str
    error: _status_pb2.Status
    def __init__(self, shipment_id: _Optional[str] = ..., ok: _Optional[bool] = ..., status: _Optional[str] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class SubmitTaskRequest(_message.Message):
    __slots__ = ("task", "request_id")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    task: Task
    request_id: str
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RunTaskRequest(_message.Message):
    __slots__ = ("task", "request_id")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    task: Task
    request_id: str
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
