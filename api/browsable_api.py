"""
DRF's browsable API as llmapi shows it: named after the product, "Log in with API key" in the
navbar (see authentication.py), and the request form filled with an example to edit.
"""

from __future__ import annotations

import json

from rest_framework.renderers import BrowsableAPIRenderer

from infra.content_security import OFFLINE_PAGE_CSP


class LlmapiBrowsableAPIRenderer(BrowsableAPIRenderer):
    template = "api/browsable_api.html"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        # Like the other HTML pages: nothing from another origin, and never framed (a session
        # page in a hostile frame could be clicked on).
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Security-Policy"] = OFFLINE_PAGE_CSP
        return super().render(data, accepted_media_type, renderer_context)

    def get_raw_data_form(self, data, view, method, request):
        form = super().get_raw_data_form(data, view, method, request)
        example = getattr(view, "browsable_api_example", None)
        if form is not None and example is not None:
            # The views declare no serializer DRF could fill the form from.
            form.fields["_content"].initial = json.dumps(example, indent=4)
        return form
