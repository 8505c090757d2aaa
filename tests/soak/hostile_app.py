"""The hostile test's app as a module attribute, for ``taskactors serve --app``."""

from tests.actors.test_hostile import make_app

app = make_app()
