import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Shipment(_message.Message):
    __slots__ = ("id", "status", "substatus", "tracking_number", "status_time", "status_times", "create_time", "update_time", "etag", "history")
    class StatusTimesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _timestamp_pb2.Timestamp
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUBSTATUS_FIELD_NUMBER: _ClassVar[int]
    TRACKING_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATUS_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_TIMES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    substatus: str
    tracking_number: str
    status_time: _timestamp_pb2.Timestamp
    status_times: _containers.MessageMap[str, _timestamp_pb2.Timestamp]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    history: _containers.RepeatedCompositeFieldContainer[Transition]
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., substatus: _Optional[str] = ..., tracking_number: _Optional[str] = ..., status_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status_times: _Optional[_Mapping[str, _timestamp_pb2.Timestamp]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., history: _Optional[_Iterable[_Union[Transition, _Mapping]]] = ...) -> None: ...

class Transition(_message.Message):
    __slots__ = ("event_id", "from_status", "to_status", "from_substatus", "to_substatus", "occurred_at", "record_time", "applied", "late", "task_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STATUS_FIELD_NUMBER: _ClassVar[int]
    TO_STATUS_FIELD_NUMBER: _ClassVar[int]
    FROM_SUBSTATUS_FIELD_NUMBER: _ClassVar[int]
    TO_SUBSTATUS_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORD_TIME_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    from_status: str
    to_status: str
    from_substatus: str
    to_substatus: str
    occurred_at: _timestamp_pb2.Timestamp
    record_time: _timestamp_pb2.Timestamp
    applied: bool
    late: bool
    task_id: str
    def __init__(self, event_id: _Optional[str] = ..., from_status: _Optional[str] = ..., to_status: _Optional[str] = ..., from_substatus: _Optional[str] = ..., to_substatus: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., record_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., applied: _Optional[bool] = ..., late: _Optional[bool] = ..., task_id: _Optional[str] = ...) -> None: ...

class CreateShipmentRequest(_message.Message):
    __slots__ = ("shipment", "request_id")
    SHIPMENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    shipment: Shipment
    request_id: str
    def __init__(self, shipment: _Optional[_Union[Shipment, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetShipmentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListShipmentsRequest(_message.Message):
    __slots__ = ("status", "page_size", "page_token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: str
    page_size: int
    page_token: str
    def __init__(self, status: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListShipmentsResponse(_message.Message):
    __slots__ = ("shipments", "next_page_token")
    SHIPMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    shipments: _containers.RepeatedCompositeFieldContainer[Shipment]
    next_page_token: str
    def __init__(self, shipments: _Optional[_Iterable[_Union[Shipment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateShipmentRequest(_message.Message):
    __slots__ = ("shipment", "update_mask", "request_id", "task_id")
    SHIPMENT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    shipment: Shipment
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    task_id: str
    def __init__(self, shipment: _Optional[_Union[Shipment, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...
