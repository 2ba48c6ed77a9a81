"""The shared request fields."""

import gc
import weakref

from completions.serializers import TextChatRequestSerializer


class Body(dict):
    """A request body that can be watched for being freed."""


def test_no_request_data_outlives_its_request(monkeypatch):
    monkeypatch.setattr(TextChatRequestSerializer, "_shared_fields", None)  # a first request
    body = Body(messages=[{"role": "user", "content": "a prompt kept too long"}])
    watched = weakref.ref(body)
    serializer = TextChatRequestSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    del serializer, body
    gc.collect()
    assert watched() is None  # the class's shared fields do not hold the first request's body
