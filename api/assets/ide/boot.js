// Starts GraphiQL (graphiql.min.js, loaded just before this file) against this Corral server.
//
// Queries and mutations go to POST /graphql, subscriptions to /graphql/ws (graphql-transport-ws).
// The JSON of the headers tab, e.g. {"Authorization": "Bearer <token>"}, goes with every HTTP
// request, and GraphiQL's fetcher merges the same headers into the websocket's connection_init
// payload, which is where Corral looks for the token of a subscription.
//
// This file is a same-origin script rather than inline code so that the page's
// Content-Security-Policy can say `script-src 'self'`.
(function () {
  "use strict";
  // The policy allows no inline style but those carrying this response's nonce. GraphiQL's
  // dialogs lock scrolling with a <style> element (react-style-singleton, bundled in
  // graphiql.min.js), which takes its nonce from this global.
  window.__webpack_nonce__ = document.currentScript.nonce;

  var here = new URL(window.location.href);
  var endpoint = new URL("/graphql", here);
  var subscriptions = new URL("/graphql/ws", here);
  subscriptions.protocol = here.protocol === "https:" ? "wss:" : "ws:";

  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: GraphiQL.createFetcher({
        url: endpoint.href,
        subscriptionUrl: subscriptions.href,
      }),
      // Open on the headers tab, where the bearer token goes. Headers are not persisted
      // (GraphiQL's default), so a token is not left behind in the browser's storage.
      defaultEditorToolsVisibility: "headers",
      defaultHeaders: '{\n  "Authorization": "Bearer "\n}',
    })
  );
})();
