import datetime

from envios.task.v1 import task_pb2 as _task_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_CACHE: _ClassVar[Source]
    SOURCE_DATABASE: _ClassVar[Source]
    SOURCE_FALLBACK: _ClassVar[Source]
SOURCE_UNSPECIFIED: Source
SOURCE_CACHE: Source
SOURCE_DATABASE: Source
SOURCE_FALLBACK: Source

class ShipmentStatus(_message.Message):
    __slots__ = ("shipment_id", "status", "substatus", "status_time", "update_time", "etag", "source")
    SHIPMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUBSTATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    shipment_id: str
    status: str
    substatus: str
    status_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    source: Source
    def __init__(self, shipment_id: _Optional[str] = ..., status: _Optional[str] = ..., substatus: _Optional[str] = ..., status_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ...) -> None: ...

class TaskStatus(_message.Message):
    __slots__ = ("task_id", "state", "progress_percent", "results", "update_time", "source")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    state: _task_pb2.Task.State
    progress_percent: int
    results: _containers.RepeatedCompositeFieldContainer[_task_pb2.ShipmentResult]
    update_time: _timestamp_pb2.Timestamp
    source: Source
    def __init__(self, task_id: _Optional[str] = ..., state: _Optional[_Union[_task_pb2.Task.State, str]] = ..., progress_percent: _Optional[int] = ..., results: _Optional[_Iterable[_Union[_task_pb2.ShipmentResult, _Mapping]]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[_Union[Source, str]] = ...) -> None: ...

class GetShipmentStatusRequest(_message.Message):
    __slots__ = ("shipment_id",)
    SHIPMENT_ID_FIELD_NUMBER: _ClassVar[int]
    shipment_id: str
    def __init__(self, shipment_id: _Optional[str] = ...) -> None: ...

class GetTaskStatusRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class BatchGetStatusRequest(_message.Message):
    __slots__ = ("shipment_ids", "task_ids")
    SHIPMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    shipment_ids: _containers.RepeatedScalarFieldContainer[str]
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shipment_ids: _Optional[_Iterable[str]] = ..., task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetStatusResponse(_message.Message):
    __slots__ = ("shipments", "tasks", "missing_shipment_ids", "missing_task_ids")
    SHIPMENTS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHIPMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    shipments: _containers.RepeatedCompositeFieldContainer[ShipmentStatus]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskStatus]
    missing_shipment_ids: _containers.RepeatedScalarFieldContainer[str]
    missing_task_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shipments: _Optional[_Iterable[_Union[ShipmentStatus, _Mapping]]] = ..., tasks: _Optional[_Iterable[_Union[TaskStatus, _Mapping]]] = ..., missing_shipment_ids: _Optional[_Iterable[str]] = ..., missing_task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetOverviewRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Overview(_message.Message):
    __slots__ = ("shipments_by_status", "tasks_by_state", "tasks_in_flight", "queue_depth", "serving_site", "compute_time")
    class ShipmentsByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class TasksByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SHIPMENTS_BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    TASKS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    TASKS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SERVING_SITE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_TIME_FIELD_NUMBER: _ClassVar[int]
    shipments_by_status: _containers.ScalarMap[str, int]
    tasks_by_state: _containers.ScalarMap[str, int]
    tasks_in_flight: int
    queue_depth: int
    serving_site: str
    compute_time: _timestamp_pb2.Timestamp
    def __init__(self, shipments_by_status: _Optional[_Mapping[str, int]] = ..., tasks_by_state: _Optional[_Mapping[str, int]] = ..., tasks_in_flight: _Optional[int] = ..., queue_depth: _Optional[int] = ..., serving_site: _Optional[str] = ..., compute_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
