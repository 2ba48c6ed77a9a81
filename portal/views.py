"""
The self-service portal: server-rendered pages, no script, nothing from another origin.

Every view is for a signed-in person (`portal_page`); every change goes through
`accounts.self_service`, which checks the person's role and writes the audit log. A refused
action is a 403 page naming what was refused; a form's mistakes come back on the form.
"""

from __future__ import annotations

import datetime as dt
import functools
from http import HTTPStatus
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST

from accounts import roles, self_service
from accounts.middleware import ADMIN_CSP
from accounts.models import ApiKey, Membership, Team
from accounts.roles import Forbidden
from accounts.self_service import InvalidInput, KeyRequest
from audit.services import Actor
from gateway import calls
from portal import usage_pages
from portal.forms import (
    AddMemberForm,
    LimitsForm,
    NewKeyForm,
    RoleForm,
    RotateKeyForm,
    TeamLimitsForm,
)


def portal_csp() -> str:
    """The admin's policy; forms may also lead to the identity provider (its logout)."""
    if not settings.OIDC_ENABLED:
        return ADMIN_CSP
    issuer = urlsplit(settings.OIDC_ISSUER)
    return ADMIN_CSP.replace(
        "form-action 'self'", f"form-action 'self' {issuer.scheme}://{issuer.netloc}"
    )


def with_portal_csp(view):
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = portal_csp()
        return response

    return wrapped


def portal_page(view):
    """Signed in, CSRF-checked, never cached, the portal's CSP; Forbidden becomes a 403 page."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except Forbidden as exc:
            return render(
                request, "portal/forbidden.html", {"reason": str(exc)}, status=HTTPStatus.FORBIDDEN
            )

    return with_portal_csp(never_cache(login_required(csrf_protect(wrapped))))


def model_names() -> list[str]:
    return sorted(spec.name for spec in calls.catalog())


def team_model_names(team: Team) -> list[str]:
    return list(team.allowed_models) or model_names()


def my_teams(user):
    if roles.is_operator(user):
        teams = list(Team.objects.all())
        own = {m.team_id: m.role for m in Membership.objects.filter(user=user)}
        return [(team, own.get(team.pk, "operator")) for team in teams]
    return [(m.team, m.role) for m in Membership.objects.select_related("team").filter(user=user)]


def key_created_page(request, created, *, title: str):
    response = render(
        request,
        "portal/key_created.html",
        {"title": title, "api_key": created.api_key, "full_key": created.full_key},
    )
    response["Cache-Control"] = "no-store"
    return response


@portal_page
def home(request):
    teams = my_teams(request.user)
    keys = (
        ApiKey.objects.select_related("team")
        .filter(created_by=request.user)
        .order_by("-created_at")
    )
    forms = {
        team.pk: NewKeyForm(initial={"team": team.pk}, model_names=team_model_names(team))
        for team, _role in teams
    }
    context = {
        "teams": [(team, role, forms[team.pk]) for team, role in teams],
        "keys": keys,
        "now": timezone.now(),
        "max_overlap": settings.PORTAL_ROTATION_MAX_OVERLAP_HOURS,
    }
    return render(request, "portal/home.html", context)


@portal_page
@require_POST
def create_key(request):
    team_field = NewKeyForm.base_fields["team"]
    try:
        team_id = team_field.clean(request.POST.get("team"))
    except ValidationError as exc:
        return render(
            request,
            "portal/form_errors.html",
            {"title": "New key", "errors": [f"team: {message}" for message in exc.messages]},
            status=HTTPStatus.BAD_REQUEST,
        )
    team = get_object_or_404(Team, pk=team_id)
    form = NewKeyForm(request.POST, model_names=team_model_names(team))
    if form.is_valid():
        days = form.cleaned_data["expires_in_days"]
        wanted = KeyRequest(
            name=form.cleaned_data["name"],
            allowed_models=form.cleaned_data["allowed_models"],
            expires_at=timezone.now() + dt.timedelta(days=days) if days else None,
        )
        try:
            created = self_service.create_key(
                actor=Actor.from_request(request), user=request.user, team=team, wanted=wanted
            )
        except InvalidInput as exc:
            form.add_error(
                exc.field if exc.field != "expires_at" else "expires_in_days", exc.message
            )
        else:
            return key_created_page(request, created, title="New API key")
    roles.require(roles.can_use_team(request.user, team), f"create keys in the team {team.name}")
    return render(
        request,
        "portal/new_key.html",
        {"team": team, "form": form},
        status=HTTPStatus.BAD_REQUEST,
    )


def _key(request, key_id: int) -> ApiKey:
    api_key = get_object_or_404(ApiKey.objects.select_related("team"), pk=key_id)
    roles.require(roles.can_manage_key(request.user, api_key), "manage this key")
    return api_key


@portal_page
@require_POST
def revoke_key(request, key_id: int):
    api_key = _key(request, key_id)
    self_service.revoke_key(actor=Actor.from_request(request), user=request.user, api_key=api_key)
    if request.POST.get("back") == "team":
        return HttpResponseRedirect(f"/portal/teams/{api_key.team_id}")
    return HttpResponseRedirect("/portal/")


@portal_page
@require_POST
def rotate_key(request, key_id: int):
    api_key = _key(request, key_id)
    form = RotateKeyForm(request.POST, max_overlap_hours=settings.PORTAL_ROTATION_MAX_OVERLAP_HOURS)
    if form.is_valid():
        try:
            created = self_service.rotate_key(
                actor=Actor.from_request(request),
                user=request.user,
                api_key=api_key,
                overlap=dt.timedelta(hours=form.cleaned_data["overlap_hours"]),
            )
        except InvalidInput as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            return key_created_page(request, created, title="Rotated API key")
    return render(
        request,
        "portal/form_errors.html",
        {"title": f"Rotate {api_key.name}", "form": form},
        status=HTTPStatus.BAD_REQUEST,
    )


@portal_page
def key_limits(request, key_id: int):
    api_key = get_object_or_404(ApiKey.objects.select_related("team"), pk=key_id)
    roles.require(roles.can_manage_team(request.user, api_key.team), "change this key's limits")
    status = HTTPStatus.OK
    if request.method == "POST":
        form = LimitsForm(request.POST)
        if form.is_valid():
            try:
                self_service.set_key_limits(
                    actor=Actor.from_request(request),
                    user=request.user,
                    api_key=api_key,
                    limits=form.limits(),
                )
            except InvalidInput as exc:
                form.add_error(exc.field, exc.message)
            else:
                return HttpResponseRedirect(f"/portal/teams/{api_key.team_id}")
        status = HTTPStatus.BAD_REQUEST
    else:
        form = LimitsForm(initial={f: getattr(api_key, f) for f in self_service.LIMIT_FIELDS})
    context = {"api_key": api_key, "team": api_key.team, "form": form}
    return render(request, "portal/key_limits.html", context, status=status)


@portal_page
def team(request, team_id: int):
    team = get_object_or_404(Team, pk=team_id)
    roles.require(roles.can_use_team(request.user, team), f"see the team {team.name}")
    manages = roles.can_manage_team(request.user, team)
    keys = ApiKey.objects.filter(team=team).select_related("created_by")
    if not manages:
        keys = keys.filter(created_by=request.user)
    context = {
        "team": team,
        "role": roles.role_in(request.user, team) or "operator",
        "manages": manages,
        "operator": roles.is_operator(request.user),
        "memberships": team.memberships.select_related("user") if manages else [],
        "keys": keys,
        "add_member_form": AddMemberForm(),
        "role_choices": Membership.Role.choices,
        "limits": [(f.replace("_", " "), getattr(team, f)) for f in self_service.LIMIT_FIELDS],
        "now": timezone.now(),
        "max_overlap": settings.PORTAL_ROTATION_MAX_OVERLAP_HOURS,
    }
    return render(request, "portal/team.html", context)


@portal_page
def team_limits(request, team_id: int):
    team = get_object_or_404(Team, pk=team_id)
    roles.require(roles.is_operator(request.user), "change the team's limits")
    status = HTTPStatus.OK
    if request.method == "POST":
        form = TeamLimitsForm(request.POST)
        if form.is_valid():
            try:
                self_service.set_team_limits(
                    actor=Actor.from_request(request),
                    user=request.user,
                    team=team,
                    limits=form.limits(),
                    allowed_models=form.model_list(),
                    max_key_days=form.cleaned_data["max_key_days"],
                )
            except InvalidInput as exc:
                form.add_error(exc.field, exc.message)
            else:
                return HttpResponseRedirect(f"/portal/teams/{team.pk}")
        status = HTTPStatus.BAD_REQUEST
    else:
        initial = {f: getattr(team, f) for f in self_service.LIMIT_FIELDS}
        initial["allowed_models"] = ", ".join(team.allowed_models)
        initial["max_key_days"] = team.max_key_days
        form = TeamLimitsForm(initial=initial)
    return render(request, "portal/team_limits.html", {"team": team, "form": form}, status=status)


@portal_page
@require_POST
def add_member(request, team_id: int):
    team = get_object_or_404(Team, pk=team_id)
    roles.require(roles.can_manage_team(request.user, team), f"manage the members of {team.name}")
    form = AddMemberForm(request.POST)
    if form.is_valid():
        try:
            self_service.add_member(
                actor=Actor.from_request(request),
                user=request.user,
                team=team,
                username=form.cleaned_data["username"],
                role=form.cleaned_data["role"],
            )
        except InvalidInput as exc:
            form.add_error(exc.field, exc.message)
        else:
            return HttpResponseRedirect(f"/portal/teams/{team.pk}")
    return render(
        request,
        "portal/form_errors.html",
        {"title": f"Add a member to {team.name}", "form": form},
        status=HTTPStatus.BAD_REQUEST,
    )


@portal_page
@require_POST
def member_role(request, membership_id: int):
    membership = get_object_or_404(Membership.objects.select_related("team"), pk=membership_id)
    form = RoleForm(request.POST)
    roles.require(roles.can_manage_team(request.user, membership.team), "change roles in this team")
    if form.is_valid():
        self_service.set_member_role(
            actor=Actor.from_request(request),
            user=request.user,
            membership=membership,
            role=form.cleaned_data["role"],
        )
        return HttpResponseRedirect(f"/portal/teams/{membership.team_id}")
    return render(
        request,
        "portal/form_errors.html",
        {"title": "Change a role", "form": form},
        status=HTTPStatus.BAD_REQUEST,
    )


@portal_page
@require_POST
def remove_member(request, membership_id: int):
    membership = get_object_or_404(Membership.objects.select_related("team"), pk=membership_id)
    team_id = membership.team_id
    self_service.remove_member(
        actor=Actor.from_request(request), user=request.user, membership=membership
    )
    return HttpResponseRedirect(f"/portal/teams/{team_id}")


@portal_page
def my_usage(request):
    prefixes = list(ApiKey.objects.filter(created_by=request.user).values_list("prefix", flat=True))
    context = usage_pages.usage_context(request, key_prefixes=prefixes)
    return render(request, "portal/usage.html", {**context, "title": "My usage"})


@portal_page
def team_usage(request, team_id: int):
    team = get_object_or_404(Team, pk=team_id)
    roles.require(roles.can_manage_team(request.user, team), f"see the usage of {team.name}")
    context = usage_pages.usage_context(request, team_names=[team.name])
    return render(
        request, "portal/usage.html", {**context, "title": f"Usage of {team.name}", "team": team}
    )


class PortalLoginView(auth_views.LoginView):
    """Single sign-on, and a password form when local passwords are on."""

    template_name = "portal/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        return {
            **super().get_context_data(**kwargs),
            "oidc_enabled": settings.OIDC_ENABLED,
            "provider_name": settings.OIDC_PROVIDER_NAME,
            "local_passwords": settings.AUTH_LOCAL_PASSWORDS or not settings.OIDC_ENABLED,
            "failed": "failed" in self.request.GET,
        }


login = with_portal_csp(PortalLoginView.as_view())
