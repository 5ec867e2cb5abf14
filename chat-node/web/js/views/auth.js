// The sign-in screen: sign in or create an account (username, password, optional display
// name), with the server's error shown as it words it.

/** signIn(mode, body): resolves once signed in (`login` or `register`), rejects with an Error. */
export function createAuthView({ els, signIn }) {
  let mode = 'login';

  function showError(msg) {
    els.authError.hidden = !msg;
    els.authError.textContent = msg || '';
  }

  function setMode(next) {
    mode = next;
    for (const tab of els.authTabs) tab.setAttribute('aria-selected', tab.dataset.mode === mode ? 'true' : 'false');
    els.authDisplayNameField.hidden = mode !== 'register';
    els.authSubmit.textContent = mode === 'register' ? 'Create account' : 'Sign in';
    els.authPassword.autocomplete = mode === 'register' ? 'new-password' : 'current-password';
    showError(null);
  }

  async function submit() {
    const username = els.authUsername.value.trim();
    const password = els.authPassword.value;
    const displayName = els.authDisplayName.value.trim();
    if (!username || !password) {
      showError('Enter a username and a password.');
      return;
    }
    els.authSubmit.disabled = true;
    showError(null);
    try {
      const body = { username, password };
      if (mode === 'register' && displayName) body.display_name = displayName;
      await signIn(mode, body);
      els.authPassword.value = '';
    } catch (e) {
      showError(e.message || 'Something went wrong.');
    } finally {
      els.authSubmit.disabled = false;
    }
  }

  for (const tab of els.authTabs) tab.addEventListener('click', () => setMode(tab.dataset.mode));
  els.authForm.addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });

  return {
    /** Shows the screen, with `message` (or none) as its error. */
    show(message) {
      els.app.hidden = true;
      els.authScreen.hidden = false;
      setMode(mode);
      showError(message || null);
      els.authUsername.focus();
    },
    hide() {
      els.authScreen.hidden = true;
      els.app.hidden = false;
    },
    /** Whether the user started typing a username (a retrying boot leaves them alone). */
    typing: () => els.authUsername.value !== '',
  };
}
