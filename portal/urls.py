from django.urls import path, register_converter

from accounts.single_sign_on import CallbackView, SignInView, SignOutView
from portal import views


class IdConverter:
    """A database id: at most 18 digits, so a longer number is a 404, not a database error."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "record_id")

urlpatterns = [
    path("portal/", views.home, name="portal-home"),
    path("portal/login", views.login, name="portal-login"),
    path("portal/logout", views.with_portal_csp(SignOutView.as_view()), name="portal-logout"),
    path("portal/usage", views.my_usage, name="portal-my-usage"),
    path("portal/keys/new", views.create_key, name="portal-create-key"),
    path("portal/keys/<record_id:key_id>/revoke", views.revoke_key, name="portal-revoke-key"),
    path("portal/keys/<record_id:key_id>/rotate", views.rotate_key, name="portal-rotate-key"),
    path("portal/keys/<record_id:key_id>/limits", views.key_limits, name="portal-key-limits"),
    path("portal/teams/<record_id:team_id>", views.team, name="portal-team"),
    path("portal/teams/<record_id:team_id>/limits", views.team_limits, name="portal-team-limits"),
    path("portal/teams/<record_id:team_id>/members", views.add_member, name="portal-add-member"),
    path("portal/teams/<record_id:team_id>/usage", views.team_usage, name="portal-team-usage"),
    path(
        "portal/members/<record_id:membership_id>/role",
        views.member_role,
        name="portal-member-role",
    ),
    path(
        "portal/members/<record_id:membership_id>/remove",
        views.remove_member,
        name="portal-remove-member",
    ),
    # OpenID Connect: start a sign-in at the provider, and come back from it.
    path("oidc/authenticate/", SignInView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", CallbackView.as_view(), name="oidc_authentication_callback"),
]
