// The page's entry point (/app.js, loaded by index.html as a module). The client lives in
// the native ES modules of js/: main.js builds the store, the controllers and the views.
import './js/main.js';
