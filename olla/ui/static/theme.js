// Light and dark: the system's preference until the person picks one with the toggle (kept in
// localStorage); highlight.js's matching stylesheet is switched with it.

const KEY = "olla-theme";

function apply(theme) {
  document.documentElement.dataset.theme = theme;
  document.getElementById("hl-light").disabled = theme === "dark";
  document.getElementById("hl-dark").disabled = theme !== "dark";
}

export function initTheme(button) {
  const system = window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  apply(localStorage.getItem(KEY) || system);
  button.addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    localStorage.setItem(KEY, next);
    apply(next);
  });
}
