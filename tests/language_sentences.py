"""Short sentences as people write them (20-100 characters), hand-written for the tests
and bench/language_short.py: the kind of text for which an "und" answer used to cost
accuracy (Hindi, Russian, Czech and Catalan above all)."""

from __future__ import annotations

SENTENCES: dict[str, list[str]] = {
    "hi": [
        "मैं कल सुबह दिल्ली जा रहा हूँ।",
        "यह किताब बहुत अच्छी है।",
        "आज मौसम बहुत सुहावना है।",
        "बच्चे पार्क में खेल रहे हैं।",
        "सरकार ने नई योजना की घोषणा की।",
        "क्या आप मेरी मदद कर सकते हैं?",
        "उसने अपना होमवर्क पूरा कर लिया।",
        "बारिश के कारण ट्रेन देर से आई।",
    ],
    "ru": [
        "Где находится ближайшая аптека?",
        "Я живу в Москве уже пять лет.",
        "Сегодня очень холодно на улице.",
        "Правительство объявило о новых мерах.",
        "Мы пойдём в кино вечером.",
        "Она читает интересную книгу.",
        "Поезд опоздал на два часа.",
        "Дети играют во дворе.",
    ],
    "cs": [
        "Kde je nejbližší lékárna?",
        "Dnes je venku velmi chladno.",
        "Vláda oznámila nová opatření.",
        "Děti si hrají na zahradě.",
        "Vlak měl dvě hodiny zpoždění.",
        "Zítra pojedeme do Prahy.",
        "Četla jsem velmi zajímavou knihu.",
        "Můžete mi prosím pomoct?",
    ],
    "ca": [
        "On és la farmàcia més propera?",
        "Avui fa molt de fred al carrer.",
        "El govern ha anunciat noves mesures.",
        "Els nens juguen al pati de l'escola.",
        "El tren va arribar amb dues hores de retard.",
        "Demà anirem a Barcelona amb cotxe.",
        "M'agrada molt llegir llibres d'història.",
        "Podeu ajudar-me, si us plau?",
    ],
    "en": [
        "The bridge will stay closed until Monday.",
        "Where did you park the car?",
        "Prices rose again in March.",
        "She won the race by two seconds.",
    ],
    "fr": [
        "Le train est arrivé en retard ce matin.",
        "Où se trouve la gare, s'il vous plaît ?",
        "La mairie a fermé la piscine.",
        "Nous partons en vacances demain.",
    ],
    "de": [
        "Der Zug hatte heute zwanzig Minuten Verspätung.",
        "Wo ist der nächste Bahnhof?",
        "Die Stadt baut eine neue Schule.",
        "Morgen soll es wieder regnen.",
    ],
    "es": [
        "El tren llegó tarde esta mañana.",
        "¿Dónde está la estación de autobuses?",
        "El ayuntamiento cerró la piscina.",
        "Mañana volveremos a casa.",
    ],
    "it": [
        "Il treno è arrivato in ritardo stamattina.",
        "Dove si trova la stazione?",
        "Il comune ha chiuso la piscina.",
        "Domani torniamo a casa presto.",
    ],
    "pt": [
        "O comboio chegou atrasado esta manhã.",
        "Onde fica a estação de autocarros?",
        "A câmara fechou a piscina municipal.",
        "Amanhã vamos voltar para casa.",
    ],
    "pl": [
        "Pociąg spóźnił się dziś rano.",
        "Gdzie jest najbliższy przystanek?",
        "Miasto buduje nową szkołę.",
        "Jutro znowu będzie padać.",
    ],
    "uk": [
        "Потяг запізнився сьогодні вранці.",
        "Де знаходиться найближча аптека?",
        "Місто будує нову школу.",
        "Завтра знову буде дощ.",
    ],
}
