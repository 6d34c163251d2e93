"""A small generative grammar of sentence *meanings*, rendered in English, French, Spanish and German.

A :class:`Meaning` is language-free: a sentence pattern, a tense, a subject (a noun phrase or a
pronoun), a verb, an object, a place... :func:`render` turns it into text in one language with that
language's real morphology and word order, so the four texts are translations, not word-for-word
glosses:

- gender and number agreement of articles, demonstratives, possessives and adjectives (fr/es/de),
  on attributive and predicate adjectives ("les maisons sont grandes", "las casas son grandes");
- adjective position: en/de before the noun, es after it, fr after it except the usual short ones
  (petit, grand, vieux, beau, bon...) which go before, with "de" for "des" before them;
- German case: nominative subjects, accusative objects ("den roten ball"), dative after locative
  prepositions ("unter dem tisch", "im garten", "den bäumen"), and strong / weak / mixed adjective
  endings after no article / the definite article / "ein"/"mein";
- verbs conjugated by person and number (i, you, he, she, we, they, and noun phrases), present and past
  (en simple past; fr passé composé with "avoir"; es pretérito perfecto with "haber"; de Perfekt with
  "haben" or "sein" and the participle at the end of the clause);
- elision and contraction: "l'arbre", "j'ai", "qu'il", "du", "des", "au"; "del"; "im"; "an apple";
- word order: German verb-second ("im garten gibt es einen hund"), verb-first questions; English
  do-support ("does the dog eat the apple?"); French "est-ce que ... ?"; Spanish "¿...?", pro-drop of
  yo/tú/nosotros, "ser" vs "estar".

Casing convention: every text is **lowercase** (German nouns included) with sentence punctuation
("der hund isst den roten apfel."). One surface form per word keeps the small demo models' vocabulary
small and makes ASR targets and references identical after the usual normalisation. espeak-ng reads
lowercase text the same way.

Vocabulary (see the tables below): about 150 nouns, 40 adjectives, 35 verbs, 6 prepositions and the
numbers 2..10, i.e. a few hundred word forms per language. Sentences are sampled with selectional
restrictions (people read books, animals do not; one eats food...) so that they make sense.

Public API: :class:`Meaning`, :func:`sample_meaning`, :func:`render`, :func:`render_all`, and the
lexicon tables :data:`NOUNS`, :data:`ADJECTIVES`, :data:`VERBS`, :data:`PREPOSITIONS`.
"""

from __future__ import annotations

import dataclasses
import random

LANGS = ("en", "fr", "es", "de")
"""The languages of the grammar, English first (the pivot of every translation pair)."""

GRAMMAR_VERSION = 1
"""Bump when the lexicon or the rendering changes: texts for a given seed change with it."""

# --------------------------------------------------------------------------------------- lexicon
# Nouns. key | classes | en sg pl | fr gender sg pl | es gender sg pl | de gender sg pl
# Classes drive the selectional restrictions: person, animal (subjects); food, drink, readable,
# writable, thing, openable, breakable, cookable, vehicle (objects); place, in, on, under (locations).
# "mass" nouns are singular only and take no indefinite article or number.
_NOUN_TABLE = """
man         | person             | man men                 | m homme hommes                | m hombre hombres            | m mann männer
woman       | person             | woman women             | f femme femmes                | f mujer mujeres             | f frau frauen
girl        | person             | girl girls              | f fille filles                | f niña niñas                | n mädchen mädchen
child       | person             | child children          | m enfant enfants              | m niño niños                | n kind kinder
king        | person             | king kings              | m roi rois                    | m rey reyes                 | m könig könige
queen       | person             | queen queens            | f reine reines                | f reina reinas              | f königin königinnen
baker       | person             | baker bakers            | m boulanger boulangers        | m panadero panaderos        | m bäcker bäcker
doctor      | person             | doctor doctors          | m médecin médecins            | m médico médicos            | m arzt ärzte
cook        | person             | cook cooks              | m cuisinier cuisiniers        | m cocinero cocineros        | m koch köche
teacher     | person             | teacher teachers        | m professeur professeurs      | m profesor profesores       | m lehrer lehrer
friend      | person             | friend friends          | m ami amis                    | m amigo amigos              | m freund freunde
sister      | person             | sister sisters          | f sœur sœurs                  | f hermana hermanas          | f schwester schwestern
brother     | person             | brother brothers        | m frère frères                | m hermano hermanos          | m bruder brüder
mother      | person             | mother mothers          | f mère mères                  | f madre madres              | f mutter mütter
father      | person             | father fathers          | m père pères                  | m padre padres              | m vater väter
uncle       | person             | uncle uncles            | m oncle oncles                | m tío tíos                  | m onkel onkel
aunt        | person             | aunt aunts              | f tante tantes                | f tía tías                  | f tante tanten
grandmother | person             | grandmother grandmothers | f grand-mère grands-mères    | f abuela abuelas            | f großmutter großmütter
grandfather | person             | grandfather grandfathers | m grand-père grands-pères    | m abuelo abuelos            | m großvater großväter
painter     | person             | painter painters        | m peintre peintres            | m pintor pintores           | m maler maler
singer      | person             | singer singers          | m chanteur chanteurs          | m cantante cantantes        | m sänger sänger
fisherman   | person             | fisherman fishermen     | m pêcheur pêcheurs            | m pescador pescadores       | m fischer fischer
dancer      | person             | dancer dancers          | f danseuse danseuses          | f bailarina bailarinas      | f tänzerin tänzerinnen
nurse       | person             | nurse nurses            | f infirmière infirmières      | f enfermera enfermeras      | f krankenschwester krankenschwestern
waiter      | person             | waiter waiters          | m serveur serveurs            | m camarero camareros        | m kellner kellner
gardener    | person             | gardener gardeners      | m jardinier jardiniers        | m jardinero jardineros      | m gärtner gärtner
baby        | person             | baby babies             | m bébé bébés                  | m bebé bebés                | n baby babys
postman     | person             | postman postmen         | m facteur facteurs            | m cartero carteros          | m briefträger briefträger
dog         | animal             | dog dogs                | m chien chiens                | m perro perros              | m hund hunde
cat         | animal             | cat cats                | m chat chats                  | m gato gatos                | f katze katzen
horse       | animal             | horse horses            | m cheval chevaux              | m caballo caballos          | n pferd pferde
bird        | animal             | bird birds              | m oiseau oiseaux              | m pájaro pájaros            | m vogel vögel
fish        | animal             | fish fish               | m poisson poissons            | m pez peces                 | m fisch fische
cow         | animal             | cow cows                | f vache vaches                | f vaca vacas                | f kuh kühe
mouse       | animal             | mouse mice              | f souris souris               | m ratón ratones             | f maus mäuse
pig         | animal             | pig pigs                | m cochon cochons              | m cerdo cerdos              | n schwein schweine
duck        | animal             | duck ducks              | m canard canards              | m pato patos                | f ente enten
frog        | animal             | frog frogs              | f grenouille grenouilles      | f rana ranas                | m frosch frösche
sheep       | animal             | sheep sheep             | m mouton moutons              | f oveja ovejas              | n schaf schafe
goat        | animal             | goat goats              | f chèvre chèvres              | f cabra cabras              | f ziege ziegen
tiger       | animal             | tiger tigers            | m tigre tigres                | m tigre tigres              | m tiger tiger
wolf        | animal             | wolf wolves             | m loup loups                  | m lobo lobos                | m wolf wölfe
fox         | animal             | fox foxes               | m renard renards              | m zorro zorros              | m fuchs füchse
donkey      | animal             | donkey donkeys          | m âne ânes                    | m burro burros              | m esel esel
spider      | animal             | spider spiders          | f araignée araignées          | f araña arañas              | f spinne spinnen
bee         | animal             | bee bees                | f abeille abeilles            | f abeja abejas              | f biene bienen
snake       | animal             | snake snakes            | m serpent serpents            | f serpiente serpientes      | f schlange schlangen
owl         | animal             | owl owls                | m hibou hiboux                | m búho búhos                | f eule eulen
turtle      | animal             | turtle turtles          | f tortue tortues              | f tortuga tortugas          | f schildkröte schildkröten
rabbit      | animal             | rabbit rabbits          | m lapin lapins                | m conejo conejos            | n kaninchen kaninchen
hen         | animal             | hen hens                | f poule poules                | f gallina gallinas          | n huhn hühner
camel       | animal             | camel camels            | m chameau chameaux            | m camello camellos          | n kamel kamele
giraffe     | animal             | giraffe giraffes        | f girafe girafes              | f jirafa jirafas            | f giraffe giraffen
zebra       | animal             | zebra zebras            | m zèbre zèbres                | f cebra cebras              | n zebra zebras
whale       | animal             | whale whales            | f baleine baleines            | f ballena ballenas          | m wal wale
crocodile   | animal             | crocodile crocodiles    | m crocodile crocodiles        | m cocodrilo cocodrilos      | n krokodil krokodile
ant         | animal             | ant ants                | f fourmi fourmis              | f hormiga hormigas          | f ameise ameisen
apple       | food               | apple apples            | f pomme pommes                | f manzana manzanas          | m apfel äpfel
bread       | food cookable      | bread breads            | m pain pains                  | m pan panes                 | n brot brote
cake        | food cookable      | cake cakes              | m gâteau gâteaux              | m pastel pasteles           | m kuchen kuchen
cheese      | food               | cheese cheeses          | m fromage fromages            | m queso quesos              | m käse käse
egg         | food cookable breakable | egg eggs           | m œuf œufs                    | m huevo huevos              | n ei eier
banana      | food               | banana bananas          | f banane bananes              | m plátano plátanos          | f banane bananen
orange      | food               | orange oranges          | f orange oranges              | f naranja naranjas          | f orange orangen
soup        | food cookable mass | soup soups              | f soupe soupes                | f sopa sopas                | f suppe suppen
carrot      | food cookable      | carrot carrots          | f carotte carottes            | f zanahoria zanahorias      | f karotte karotten
tomato      | food cookable      | tomato tomatoes         | f tomate tomates              | m tomate tomates            | f tomate tomaten
pear        | food               | pear pears              | f poire poires                | f pera peras                | f birne birnen
lemon       | food               | lemon lemons            | m citron citrons              | m limón limones             | f zitrone zitronen
cherry      | food               | cherry cherries         | f cerise cerises              | f cereza cerezas            | f kirsche kirschen
strawberry  | food               | strawberry strawberries | f fraise fraises              | f fresa fresas              | f erdbeere erdbeeren
cookie      | food               | cookie cookies          | m biscuit biscuits            | f galleta galletas          | m keks kekse
pizza       | food cookable      | pizza pizzas            | f pizza pizzas                | f pizza pizzas              | f pizza pizzas
grape       | food               | grape grapes            | m raisin raisins              | f uva uvas                  | f traube trauben
onion       | food cookable      | onion onions            | m oignon oignons              | f cebolla cebollas          | f zwiebel zwiebeln
milk        | drink mass         | milk milks              | m lait laits                  | f leche leches              | f milch milche
juice       | drink mass         | juice juices            | m jus jus                     | m zumo zumos                | m saft säfte
coffee      | drink mass         | coffee coffees          | m café cafés                  | m café cafés                | m kaffee kaffees
tea         | drink mass         | tea teas                | m thé thés                    | m té tés                    | m tee tees
wine        | drink mass         | wine wines              | m vin vins                    | m vino vinos                | m wein weine
book        | readable writable openable thing | book books | m livre livres              | m libro libros              | n buch bücher
letter      | readable writable openable thing | letter letters | f lettre lettres          | f carta cartas              | m brief briefe
newspaper   | readable thing     | newspaper newspapers    | m journal journaux            | m periódico periódicos      | f zeitung zeitungen
map         | readable thing     | map maps                | f carte cartes                | m mapa mapas                | f karte karten
story       | readable writable  | story stories           | f histoire histoires          | m cuento cuentos            | f geschichte geschichten
poem        | readable writable  | poem poems              | m poème poèmes                | m poema poemas              | n gedicht gedichte
magazine    | readable thing     | magazine magazines      | m magazine magazines          | f revista revistas          | f zeitschrift zeitschriften
ball        | thing              | ball balls              | m ballon ballons              | f pelota pelotas            | m ball bälle
key         | thing              | key keys                | f clé clés                    | f llave llaves              | m schlüssel schlüssel
box         | thing openable place in on | box boxes       | f boîte boîtes                | f caja cajas                | f kiste kisten
cup         | thing breakable    | cup cups                | f tasse tasses                | f taza tazas                | f tasse tassen
glass       | thing breakable    | glass glasses           | m verre verres                | m vaso vasos                | n glas gläser
bottle      | thing breakable openable | bottle bottles    | f bouteille bouteilles        | f botella botellas          | f flasche flaschen
hat         | thing              | hat hats                | m chapeau chapeaux            | m sombrero sombreros        | m hut hüte
shoe        | thing              | shoe shoes              | f chaussure chaussures        | m zapato zapatos            | m schuh schuhe
bag         | thing openable     | bag bags                | m sac sacs                    | m bolso bolsos              | f tasche taschen
umbrella    | thing openable     | umbrella umbrellas      | m parapluie parapluies        | m paraguas paraguas         | m regenschirm regenschirme
pen         | thing              | pen pens                | m stylo stylos                | m bolígrafo bolígrafos      | m stift stifte
pencil      | thing              | pencil pencils          | m crayon crayons              | m lápiz lápices             | m bleistift bleistifte
picture     | thing              | picture pictures        | m tableau tableaux            | m cuadro cuadros            | n bild bilder
clock       | thing breakable    | clock clocks            | f horloge horloges            | m reloj relojes             | f uhr uhren
flower      | thing              | flower flowers          | f fleur fleurs                | f flor flores               | f blume blumen
toy         | thing breakable    | toy toys                | m jouet jouets                | m juguete juguetes          | n spielzeug spielzeuge
phone       | thing breakable    | phone phones            | m téléphone téléphones        | m teléfono teléfonos        | n telefon telefone
lamp        | thing breakable    | lamp lamps              | f lampe lampes                | f lámpara lámparas          | f lampe lampen
basket      | thing place in     | basket baskets          | m panier paniers              | f cesta cestas              | m korb körbe
coat        | thing              | coat coats              | m manteau manteaux            | m abrigo abrigos            | m mantel mäntel
shirt       | thing              | shirt shirts            | f chemise chemises            | f camisa camisas            | n hemd hemden
ring        | thing              | ring rings              | f bague bagues                | m anillo anillos            | m ring ringe
candle      | thing              | candle candles          | f bougie bougies              | f vela velas                | f kerze kerzen
guitar      | thing              | guitar guitars          | f guitare guitares            | f guitarra guitarras        | f gitarre gitarren
computer    | thing breakable    | computer computers      | m ordinateur ordinateurs      | m ordenador ordenadores     | m computer computer
stone       | thing              | stone stones            | f pierre pierres              | f piedra piedras            | m stein steine
spoon       | thing              | spoon spoons            | f cuillère cuillères          | f cuchara cucharas          | m löffel löffel
knife       | thing              | knife knives            | m couteau couteaux            | m cuchillo cuchillos        | n messer messer
plate       | thing breakable    | plate plates            | f assiette assiettes          | m plato platos              | m teller teller
door        | openable place     | door doors              | f porte portes                | f puerta puertas            | f tür türen
window      | openable breakable place | window windows    | f fenêtre fenêtres            | f ventana ventanas          | n fenster fenster
chair       | place on under     | chair chairs            | f chaise chaises              | f silla sillas              | m stuhl stühle
table       | place on under     | table tables            | f table tables                | f mesa mesas                | m tisch tische
bed         | place on under     | bed beds                | m lit lits                    | f cama camas                | n bett betten
sofa        | place on under     | sofa sofas              | m canapé canapés              | m sofá sofás                | n sofa sofas
car         | vehicle place in under | car cars            | f voiture voitures            | m coche coches              | n auto autos
bicycle     | vehicle place      | bicycle bicycles        | m vélo vélos                  | f bicicleta bicicletas      | n fahrrad fahrräder
boat        | vehicle place in on | boat boats             | m bateau bateaux              | m barco barcos              | n boot boote
house       | place in           | house houses            | f maison maisons              | f casa casas                | n haus häuser
garden      | place in           | garden gardens          | m jardin jardins              | m jardín jardines           | m garten gärten
tree        | place under        | tree trees              | m arbre arbres                | m árbol árboles             | m baum bäume
bridge      | place on under     | bridge bridges          | m pont ponts                  | m puente puentes            | f brücke brücken
wall        | place on           | wall walls              | m mur murs                    | f pared paredes             | f wand wände
church      | place in           | church churches         | f église églises              | f iglesia iglesias          | f kirche kirchen
school      | place in           | school schools          | f école écoles                | f escuela escuelas          | f schule schulen
kitchen     | place in           | kitchen kitchens        | f cuisine cuisines            | f cocina cocinas            | f küche küchen
forest      | place in           | forest forests          | f forêt forêts                | m bosque bosques            | m wald wälder
park        | place in           | park parks              | m parc parcs                  | m parque parques            | m park parks
"""

# Adjectives. key | noun classes it fits (* = any) | en | fr | fr position | es | de
# Colours fit animals and things, not people.
# fr/es: one form = regular inflection; "m,f,mpl,fpl" when irregular (fr may add a 5th form used
# before a vowel in the masculine singular: "vieil", "bel", "nouvel"). de: "predicate/attributive-stem"
# when the stem changes ("teuer/teur").
_ADJ_TABLE = """
red        | animal thing food vehicle place readable | red        | rouge                             | post | rojo                   | rot
blue       | animal thing food vehicle place readable | blue       | bleu                              | post | azul                   | blau
green      | animal thing food vehicle place readable | green      | vert                              | post | verde                  | grün
yellow     | animal thing food vehicle place readable | yellow     | jaune                             | post | amarillo               | gelb
black      | animal thing food vehicle place readable | black      | noir                              | post | negro                  | schwarz
white      | animal thing food vehicle place readable | white      | blanc,blanche,blancs,blanches     | post | blanco                 | weiß
grey       | animal thing food vehicle place readable | grey       | gris,grise,gris,grises            | post | gris,gris,grises,grises | grau
brown      | animal thing food vehicle place readable | brown      | marron,marron,marron,marron       | post | marrón,marrón,marrones,marrones | braun
big        | *                          | big        | grand                             | pre  | grande                 | groß
small      | *                          | small      | petit                             | pre  | pequeño                | klein
old        | *                          | old        | vieux,vieille,vieux,vieilles,vieil | pre | viejo                  | alt
new        | thing vehicle readable place | new      | nouveau,nouvelle,nouveaux,nouvelles,nouvel | pre | nuevo          | neu
beautiful  | *                          | beautiful  | beau,belle,beaux,belles,bel       | pre  | bonito                 | schön
ugly       | *                          | ugly       | laid                              | post | feo                    | hässlich
good       | person animal food readable | good      | bon,bonne,bons,bonnes             | pre  | bueno                  | gut
bad        | person animal food readable | bad       | mauvais,mauvaise,mauvais,mauvaises | pre | malo                  | schlecht
young      | person animal              | young      | jeune                             | pre  | joven,joven,jóvenes,jóvenes | jung
happy      | person animal              | happy      | heureux,heureuse,heureux,heureuses | post | feliz,feliz,felices,felices | glücklich
sad        | person animal              | sad        | triste                            | post | triste                 | traurig
clever     | person animal              | clever     | intelligent                       | post | inteligente            | klug
funny      | person animal              | funny      | drôle                             | post | gracioso               | lustig
friendly   | person animal              | friendly   | gentil,gentille,gentils,gentilles | post | amable                 | freundlich
rich       | person                     | rich       | riche                             | post | rico                   | reich
strong     | person animal              | strong     | fort                              | post | fuerte                 | stark
wild       | animal                     | wild       | sauvage                           | post | salvaje                | wild
famous     | person animal place        | famous     | célèbre                           | post | famoso                 | berühmt
long       | thing vehicle readable   | long    | long,longue,longs,longues         | pre  | largo                  | lang
short      | thing readable             | short      | court                             | post | corto                  | kurz
heavy      | thing vehicle              | heavy      | lourd                             | post | pesado                 | schwer
light      | thing                      | light      | léger,légère,légers,légères       | post | ligero                 | leicht
fast       | animal vehicle             | fast       | rapide                            | post | rápido                 | schnell
slow       | animal vehicle             | slow       | lent                              | post | lento                  | langsam
round      | thing food place           | round      | rond                              | post | redondo                | rund
expensive  | thing vehicle food drink   | expensive  | cher,chère,chers,chères           | post | caro                   | teuer/teur
soft       | thing food                 | soft       | doux,douce,doux,douces            | post | suave                  | weich
hard       | thing food                 | hard       | dur                               | post | duro                   | hart
strange    | *                          | strange    | étrange                           | post | extraño                | seltsam
modern     | thing vehicle place        | modern     | moderne                           | post | moderno                | modern
sweet      | food drink                 | sweet      | sucré                             | post | dulce                  | süß
delicious  | food drink                 | delicious  | délicieux,délicieuse,délicieux,délicieuses | post | delicioso     | lecker
fresh      | food drink                 | fresh      | frais,fraîche,frais,fraîches      | post | fresco                 | frisch
"""

# Verbs: one block per verb, blocks separated by a blank line.
#   key | t (transitive), i (intransitive) or ti (both) | subject classes | object classes
#   en: base 3sg past [particle]
#   fr: je tu il nous ils / participle            (past: avoir + participle)
#   es: yo tú él nosotros ellos / participle      (past: haber + participle)
#   de: ich du er wir sie / participle auxiliary  (past: haben|sein + ... + participle)
_VERB_TABLE = """
eat | ti | person animal | food
en: eat eats ate
fr: mange manges mange mangeons mangent / mangé
es: como comes come comemos comen / comido
de: esse isst isst essen essen / gegessen haben

drink | ti | person animal | drink
en: drink drinks drank
fr: bois bois boit buvons boivent / bu
es: bebo bebes bebe bebemos beben / bebido
de: trinke trinkst trinkt trinken trinken / getrunken haben

see | t | person animal | thing food readable vehicle
en: see sees saw
fr: vois vois voit voyons voient / vu
es: veo ves ve vemos ven / visto
de: sehe siehst sieht sehen sehen / gesehen haben

find | t | person animal | thing food readable
en: find finds found
fr: trouve trouves trouve trouvons trouvent / trouvé
es: encuentro encuentras encuentra encontramos encuentran / encontrado
de: finde findest findet finden finden / gefunden haben

lose | t | person | thing readable
en: lose loses lost
fr: perds perds perd perdons perdent / perdu
es: pierdo pierdes pierde perdemos pierden / perdido
de: verliere verlierst verliert verlieren verlieren / verloren haben

buy | t | person | thing food drink readable vehicle
en: buy buys bought
fr: achète achètes achète achetons achètent / acheté
es: compro compras compra compramos compran / comprado
de: kaufe kaufst kauft kaufen kaufen / gekauft haben

sell | t | person | thing food readable vehicle
en: sell sells sold
fr: vends vends vend vendons vendent / vendu
es: vendo vendes vende vendemos venden / vendido
de: verkaufe verkaufst verkauft verkaufen verkaufen / verkauft haben

read | ti | person | readable
en: read reads read
fr: lis lis lit lisons lisent / lu
es: leo lees lee leemos leen / leído
de: lese liest liest lesen lesen / gelesen haben

write | ti | person | writable
en: write writes wrote
fr: écris écris écrit écrivons écrivent / écrit
es: escribo escribes escribe escribimos escriben / escrito
de: schreibe schreibst schreibt schreiben schreiben / geschrieben haben

open | t | person | openable
en: open opens opened
fr: ouvre ouvres ouvre ouvrons ouvrent / ouvert
es: abro abres abre abrimos abren / abierto
de: öffne öffnest öffnet öffnen öffnen / geöffnet haben

close | t | person | openable
en: close closes closed
fr: ferme fermes ferme fermons ferment / fermé
es: cierro cierras cierra cerramos cierran / cerrado
de: schließe schließt schließt schließen schließen / geschlossen haben

carry | t | person animal | thing
en: carry carries carried
fr: porte portes porte portons portent / porté
es: llevo llevas lleva llevamos llevan / llevado
de: trage trägst trägt tragen tragen / getragen haben

wash | t | person | thing vehicle
en: wash washes washed
fr: lave laves lave lavons lavent / lavé
es: lavo lavas lava lavamos lavan / lavado
de: wasche wäschst wäscht waschen waschen / gewaschen haben

draw | ti | person | thing food vehicle
en: draw draws drew
fr: dessine dessines dessine dessinons dessinent / dessiné
es: dibujo dibujas dibuja dibujamos dibujan / dibujado
de: zeichne zeichnest zeichnet zeichnen zeichnen / gezeichnet haben

want | t | person animal | thing food drink readable
en: want wants wanted
fr: veux veux veut voulons veulent / voulu
es: quiero quieres quiere queremos quieren / querido
de: will willst will wollen wollen / gewollt haben

have | t | person animal | thing food readable vehicle
en: have has had
fr: ai as a avons ont / eu
es: tengo tienes tiene tenemos tienen / tenido
de: habe hast hat haben haben / gehabt haben

take | t | person | thing food readable
en: take takes took
fr: prends prends prend prenons prennent / pris
es: tomo tomas toma tomamos toman / tomado
de: nehme nimmst nimmt nehmen nehmen / genommen haben

cook | ti | person | cookable
en: cook cooks cooked
fr: cuisine cuisines cuisine cuisinons cuisinent / cuisiné
es: cocino cocinas cocina cocinamos cocinan / cocinado
de: koche kochst kocht kochen kochen / gekocht haben

hide | t | person animal | thing food
en: hide hides hid
fr: cache caches cache cachons cachent / caché
es: escondo escondes esconde escondemos esconden / escondido
de: verstecke versteckst versteckt verstecken verstecken / versteckt haben

break | t | person animal | breakable
en: break breaks broke
fr: casse casses casse cassons cassent / cassé
es: rompo rompes rompe rompemos rompen / roto
de: zerbreche zerbrichst zerbricht zerbrechen zerbrechen / zerbrochen haben

bring | t | person animal | thing food drink readable
en: bring brings brought
fr: apporte apportes apporte apportons apportent / apporté
es: traigo traes trae traemos traen / traído
de: bringe bringst bringt bringen bringen / gebracht haben

look_for | t | person animal | thing food readable
en: look looks looked for
fr: cherche cherches cherche cherchons cherchent / cherché
es: busco buscas busca buscamos buscan / buscado
de: suche suchst sucht suchen suchen / gesucht haben

clean | t | person | thing vehicle
en: clean cleans cleaned
fr: nettoie nettoies nettoie nettoyons nettoient / nettoyé
es: limpio limpias limpia limpiamos limpian / limpiado
de: putze putzt putzt putzen putzen / geputzt haben

throw | t | person | thing food
en: throw throws threw
fr: lance lances lance lançons lancent / lancé
es: lanzo lanzas lanza lanzamos lanzan / lanzado
de: werfe wirfst wirft werfen werfen / geworfen haben

sleep | i | person animal |
en: sleep sleeps slept
fr: dors dors dort dormons dorment / dormi
es: duermo duermes duerme dormimos duermen / dormido
de: schlafe schläfst schläft schlafen schlafen / geschlafen haben

sing | i | person |
en: sing sings sang
fr: chante chantes chante chantons chantent / chanté
es: canto cantas canta cantamos cantan / cantado
de: singe singst singt singen singen / gesungen haben

dance | i | person |
en: dance dances danced
fr: danse danses danse dansons dansent / dansé
es: bailo bailas baila bailamos bailan / bailado
de: tanze tanzt tanzt tanzen tanzen / getanzt haben

work | i | person |
en: work works worked
fr: travaille travailles travaille travaillons travaillent / travaillé
es: trabajo trabajas trabaja trabajamos trabajan / trabajado
de: arbeite arbeitest arbeitet arbeiten arbeiten / gearbeitet haben

laugh | i | person |
en: laugh laughs laughed
fr: ris ris rit rions rient / ri
es: río ríes ríe reímos ríen / reído
de: lache lachst lacht lachen lachen / gelacht haben

cry | i | person |
en: cry cries cried
fr: pleure pleures pleure pleurons pleurent / pleuré
es: lloro lloras llora lloramos lloran / llorado
de: weine weinst weint weinen weinen / geweint haben

play | i | person animal |
en: play plays played
fr: joue joues joue jouons jouent / joué
es: juego juegas juega jugamos juegan / jugado
de: spiele spielst spielt spielen spielen / gespielt haben

wait | i | person animal |
en: wait waits waited
fr: attends attends attend attendons attendent / attendu
es: espero esperas espera esperamos esperan / esperado
de: warte wartest wartet warten warten / gewartet haben

swim | i | person animal |
en: swim swims swam
fr: nage nages nage nageons nagent / nagé
es: nado nadas nada nadamos nadan / nadado
de: schwimme schwimmst schwimmt schwimmen schwimmen / geschwommen sein

run | i | person animal |
en: run runs ran
fr: cours cours court courons courent / couru
es: corro corres corre corremos corren / corrido
de: laufe läufst läuft laufen laufen / gelaufen sein

jump | i | person animal |
en: jump jumps jumped
fr: saute sautes saute sautons sautent / sauté
es: salto saltas salta saltamos saltan / saltado
de: springe springst springt springen springen / gesprungen sein

walk | i | person animal |
en: walk walks walked
fr: marche marches marche marchons marchent / marché
es: camino caminas camina caminamos caminan / caminado
de: gehe gehst geht gehen gehen / gegangen sein

smile | i | person |
en: smile smiles smiled
fr: souris souris sourit sourions sourient / souri
es: sonrío sonríes sonríe sonreímos sonríen / sonreído
de: lächle lächelst lächelt lächeln lächeln / gelächelt haben
"""

# Locative prepositions. key | place class needed | en | fr | es | de (+ dative)
_PREP_TABLE = """
on        | on    | on          | sur        | sobre       | auf
under     | under | under       | sous       | debajo de   | unter
in        | in    | in          | dans       | en          | in
next_to   | place | next to     | à côté de  | al lado de  | neben
behind    | place | behind      | derrière   | detrás de   | hinter
in_front  | place | in front of | devant     | delante de  | vor
"""

NUMBERS: dict[str, list[str]] = {  # index n -> the word for n, 2..10
    "en": ["", "", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"],
    "fr": ["", "", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix"],
    "es": ["", "", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve", "diez"],
    "de": ["", "", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn"],
}

# Person/number slots of a conjugation row: i, you (sg), he/she/it, we, they.
P1SG, P2SG, P3SG, P1PL, P3PL = range(5)

# Copulas and auxiliaries, rows in the slot order above.
_BE = {  # "is" of properties (es: ser)
    ("en", "present"): "am are is are are",
    ("en", "past"): "was were was were were",
    ("fr", "present"): "suis es est sommes sont",
    ("fr", "past"): "étais étais était étions étaient",
    ("es", "present"): "soy eres es somos son",
    ("es", "past"): "era eras era éramos eran",
    ("de", "present"): "bin bist ist sind sind",
    ("de", "past"): "war warst war waren waren",
}
_ESTAR = {"present": "estoy estás está estamos están", "past": "estaba estabas estaba estábamos estaban"}
_AUX = {
    "fr": "ai as a avons ont",
    "es": "he has ha hemos han",
    "de:haben": "habe hast hat haben haben",
    "de:sein": "bin bist ist sind sind",
}
_PRONOUNS = {  # (person slot, gender) -> subject pronoun; es 1st/2nd person are dropped (pro-drop)
    "en": {
        (P1SG, "m"): "i",
        (P2SG, "m"): "you",
        (P3SG, "m"): "he",
        (P3SG, "f"): "she",
        (P1PL, "m"): "we",
        (P3PL, "m"): "they",
    },
    "fr": {
        (P1SG, "m"): "je",
        (P2SG, "m"): "tu",
        (P3SG, "m"): "il",
        (P3SG, "f"): "elle",
        (P1PL, "m"): "nous",
        (P3PL, "m"): "ils",
    },
    "es": {
        (P1SG, "m"): "",
        (P2SG, "m"): "",
        (P3SG, "m"): "él",
        (P3SG, "f"): "ella",
        (P1PL, "m"): "",
        (P3PL, "m"): "ellos",
    },
    "de": {
        (P1SG, "m"): "ich",
        (P2SG, "m"): "du",
        (P3SG, "m"): "er",
        (P3SG, "f"): "sie",
        (P1PL, "m"): "wir",
        (P3PL, "m"): "sie",
    },
}


@dataclasses.dataclass(frozen=True)
class Noun:
    """One noun in four languages. ``forms[lang] = (gender, singular, plural)``; en gender is "n"."""

    key: str
    classes: frozenset
    forms: dict


@dataclasses.dataclass(frozen=True)
class Adjective:
    """One adjective. ``forms[lang]``: en/de one word (de: predicate form), fr/es a 4-tuple
    (m sg, f sg, m pl, f pl); ``fr_vowel`` is the fr m sg form before a vowel; ``de_stem`` the
    attributive stem; ``fr_pre`` whether it goes before the noun in French."""

    key: str
    classes: frozenset
    forms: dict
    fr_pre: bool
    fr_vowel: str
    de_stem: str

    def fits(self, noun: Noun) -> bool:
        """Whether this adjective makes sense on ``noun``."""
        return "*" in self.classes or bool(self.classes & noun.classes)


@dataclasses.dataclass(frozen=True)
class Verb:
    """One verb. ``en = (base, 3sg, past, particle)``; ``fr``/``es``: (5 present forms, participle);
    ``de``: (5 present forms, participle, auxiliary "haben"|"sein")."""

    key: str
    transitive: bool
    intransitive: bool
    subjects: frozenset
    objects: frozenset
    en: tuple
    fr: tuple
    es: tuple
    de: tuple


@dataclasses.dataclass(frozen=True)
class Preposition:
    """A locative preposition; ``needs`` is the noun class its object must have."""

    key: str
    needs: str
    forms: dict


def _rows(table: str, ncols: int, name: str) -> list[list[str]]:
    rows = []
    for lineno, line in enumerate(table.strip("\n").splitlines(), start=1):
        cells = [c.strip() for c in line.split("|")]
        if len(cells) != ncols:
            raise ValueError(f"{name} table line {lineno}: expected {ncols} '|' columns, got {len(cells)}: {line!r}")
        rows.append(cells)
    return rows


def _regular_fr(m: str) -> tuple[str, str, str, str]:
    f = m if m.endswith("e") else m + "e"
    mpl = m if m[-1] in "sx" else m + "s"
    return m, f, mpl, f + "s"


def _regular_es(m: str) -> tuple[str, str, str, str]:
    if m.endswith("o"):
        return m, m[:-1] + "a", m + "s", m[:-1] + "as"
    if m.endswith("e"):
        return m, m, m + "s", m + "s"
    pl = m[:-1] + "ces" if m.endswith("z") else m + "es"
    return m, m, pl, pl


def _load_nouns() -> dict[str, Noun]:
    nouns = {}
    for key, classes, en, fr, es, de in _rows(_NOUN_TABLE, 6, "noun"):
        forms = {"en": ("n", *en.split())}
        for lang, cell in (("fr", fr), ("es", es), ("de", de)):
            parts = cell.split()
            if len(parts) != 3 or parts[0] not in "mfn":
                raise ValueError(f"noun {key!r}, {lang}: expected 'gender singular plural', got {cell!r}")
            forms[lang] = tuple(parts)
        if len(forms["en"]) != 3:
            raise ValueError(f"noun {key!r}, en: expected 'singular plural', got {en!r}")
        nouns[key] = Noun(key, frozenset(classes.split()), forms)
    return nouns


def _load_adjectives() -> dict[str, Adjective]:
    adjs = {}
    for key, classes, en, fr, pos, es, de in _rows(_ADJ_TABLE, 7, "adjective"):
        fr_forms = tuple(fr.split(",")) if "," in fr else _regular_fr(fr)
        es_forms = tuple(es.split(",")) if "," in es else _regular_es(es)
        if len(fr_forms) not in (4, 5) or len(es_forms) != 4 or pos not in ("pre", "post"):
            raise ValueError(f"adjective {key!r}: bad fr {fr!r} / es {es!r} / position {pos!r}")
        de_pred, _, de_stem = de.partition("/")
        adjs[key] = Adjective(
            key,
            frozenset(classes.split()),
            {"en": en, "fr": fr_forms[:4], "es": es_forms, "de": de_pred},
            fr_pre=pos == "pre",
            fr_vowel=fr_forms[4] if len(fr_forms) == 5 else fr_forms[0],
            de_stem=de_stem or de_pred,
        )
    return adjs


def _load_verbs() -> dict[str, Verb]:
    verbs = {}
    for block in _VERB_TABLE.strip().split("\n\n"):
        head, *lines = block.strip().splitlines()
        key, kind, subjects, objects = (c.strip() for c in head.split("|"))
        langs = {}
        for line in lines:
            lang, _, forms = line.partition(":")
            langs[lang.strip()] = forms.strip()
        if sorted(langs) != sorted(LANGS) or kind not in ("t", "i", "ti"):
            raise ValueError(f"verb {key!r}: needs lines en/fr/es/de and kind t|i|ti, got {sorted(langs)} {kind!r}")
        words = langs["en"].split()
        en = (*words, "") if len(words) == 3 else tuple(words)
        parsed = {}
        for lang in ("fr", "es", "de"):
            present_part, _, rest_part = langs[lang].partition("/")
            present, rest = present_part.split(), rest_part.split()
            if len(present) != 5 or len(rest) != (2 if lang == "de" else 1):
                raise ValueError(f"verb {key!r}, {lang}: expected 5 present forms / participle, got {langs[lang]!r}")
            parsed[lang] = (tuple(present), *rest)
        verbs[key] = Verb(
            key,
            "t" in kind,
            "i" in kind,
            frozenset(subjects.split()),
            frozenset(objects.split()),
            tuple(en),
            parsed["fr"],
            parsed["es"],
            parsed["de"],
        )
    return verbs


def _load_prepositions() -> dict[str, Preposition]:
    return {
        key: Preposition(key, needs, {"en": en, "fr": fr, "es": es, "de": de})
        for key, needs, en, fr, es, de in _rows(_PREP_TABLE, 6, "preposition")
    }


NOUNS: dict[str, Noun] = _load_nouns()
ADJECTIVES: dict[str, Adjective] = _load_adjectives()
VERBS: dict[str, Verb] = _load_verbs()
PREPOSITIONS: dict[str, Preposition] = _load_prepositions()


def vocabulary(lang: str) -> set[str]:
    """Every word form the grammar can produce in ``lang`` (lowercase, no punctuation)."""
    words: set[str] = set()
    for n in NOUNS.values():
        words.update(n.forms[lang][1:])
    for a in ADJECTIVES.values():
        f = a.forms[lang]
        words.update([f] if isinstance(f, str) else f)
    for v in VERBS.values():
        words.update(w for part in getattr(v, lang) for w in (part if isinstance(part, tuple) else [part]) if w)
    for p in PREPOSITIONS.values():
        words.update(p.forms[lang].split())
    words.update(NUMBERS[lang][2:])
    return words - {"haben", "sein"} if lang == "de" else words


# --------------------------------------------------------------------------------------- meanings


@dataclasses.dataclass(frozen=True)
class NP:
    """A noun phrase meaning. ``det``: def (the), indef (a / some), dem (this/these), poss (my), num."""

    noun: str
    det: str
    plural: bool = False
    count: int = 0
    """For ``det == "num"``: the number, 2..10."""
    adj: str | None = None

    def key(self) -> str:
        return f"{self.det}{self.count or ''}{'.pl' if self.plural else ''}:{self.adj + '+' if self.adj else ''}{self.noun}"


@dataclasses.dataclass(frozen=True)
class Pronoun:
    """A personal pronoun subject: ``slot`` P1SG..P3PL, ``gender`` m|f (f only for "she")."""

    slot: int
    gender: str = "m"

    def key(self) -> str:
        return f"pro{self.slot}{self.gender}"


PATTERNS = ("transitive", "intransitive", "adjective", "locative", "existential", "question", "where")
"""Sentence patterns: "the dog eats the apple", "the cat sleeps (under the table)", "the houses are
big", "the cat is in the garden", "there is a dog in the garden", "does the dog eat the apple?",
"where is the cat?"."""


@dataclasses.dataclass(frozen=True)
class Meaning:
    """A language-free sentence: what :func:`render` puts into words."""

    pattern: str
    tense: str
    """present | past"""
    subject: NP | Pronoun
    verb: str | None = None
    obj: NP | None = None
    prep: str | None = None
    place: NP | None = None
    adj: str | None = None
    """Predicate adjective of the "adjective" pattern."""
    negated: bool = False

    def key(self) -> str:
        """A canonical string: two meanings are the same sentence iff their keys are equal."""
        parts = [
            self.pattern,
            self.tense,
            self.subject.key(),
            self.verb or "-",
            self.obj.key() if self.obj else "-",
            self.prep or "-",
            self.place.key() if self.place else "-",
            self.adj or "-",
            "neg" if self.negated else "pos",
        ]
        return "|".join(parts)


def _slot(subject: NP | Pronoun) -> int:
    if isinstance(subject, Pronoun):
        return subject.slot
    return P3PL if subject.plural else P3SG


def _pick(rng: random.Random, items):
    items = sorted(items)
    return items[rng.randrange(len(items))]


def _sample_np(rng: random.Random, classes: set[str], dets: tuple[str, ...], adj_p: float = 0.4) -> NP:
    noun = NOUNS[_pick(rng, [k for k, n in NOUNS.items() if n.classes & classes])]
    det = dets[rng.randrange(len(dets))]
    if "mass" in noun.classes:
        det = "def" if det in ("indef", "num") else det
        plural, count = False, 0
    elif det == "num":
        plural, count = True, rng.randint(2, 10)
    else:
        plural, count = rng.random() < 0.35, 0
    adj = None
    if rng.random() < adj_p:
        adj = _pick(rng, [k for k, a in ADJECTIVES.items() if a.fits(noun)])
    return NP(noun.key, det, plural, count, adj)


_SUBJ_DETS = ("def", "def", "indef", "dem", "poss", "num")
_OBJ_DETS = ("def", "def", "indef", "indef", "dem", "poss", "num")
_PLACE_DETS = ("def", "def", "def", "indef", "dem", "poss")


def _sample_subject(rng: random.Random, classes: set[str], pronoun_p: float, slots=(P1SG, P2SG, P3SG, P1PL, P3PL)):
    if "person" in classes and rng.random() < pronoun_p:
        slot = slots[rng.randrange(len(slots))]
        return Pronoun(slot, "f" if slot == P3SG and rng.random() < 0.5 else "m")
    return _sample_np(rng, classes, _SUBJ_DETS)


def _sample_place(rng: random.Random) -> tuple[str, NP]:
    prep = PREPOSITIONS[_pick(rng, PREPOSITIONS)]
    place = _sample_np(rng, {prep.needs}, _PLACE_DETS, adj_p=0.25)
    if place.det == "indef" and place.plural:  # "à côté de des" does not exist; keep PPs singular-indefinite
        place = dataclasses.replace(place, plural=False)
    return prep.key, place


def sample_meaning(rng: random.Random) -> Meaning:
    """Draw one meaning. All randomness comes from ``rng``, so a seeded ``rng`` gives a fixed sequence."""
    pattern = rng.choices(PATTERNS, weights=(34, 22, 14, 10, 8, 7, 5))[0]
    tense = "past" if rng.random() < 0.4 else "present"
    if pattern in ("transitive", "question"):
        verb = VERBS[_pick(rng, [k for k, v in VERBS.items() if v.transitive])]
        slots = (P2SG, P3SG, P3PL) if pattern == "question" else (P1SG, P2SG, P3SG, P1PL, P3PL)
        subject = _sample_subject(rng, set(verb.subjects), 0.25, slots)
        return Meaning(pattern, tense, subject, verb.key, obj=_sample_np(rng, set(verb.objects), _OBJ_DETS))
    if pattern == "intransitive":
        verb = VERBS[_pick(rng, [k for k, v in VERBS.items() if v.intransitive])]
        subject = _sample_subject(rng, set(verb.subjects), 0.25)
        prep, place = _sample_place(rng) if rng.random() < 0.5 else (None, None)
        return Meaning(pattern, tense, subject, verb.key, prep=prep, place=place, negated=rng.random() < 0.2)
    if pattern == "adjective":
        if rng.random() < 0.2:  # he / she / they: their gender is known, so fr/es agreement is fixed
            subject = _sample_subject(rng, {"person"}, 1.0, (P3SG, P3PL))
            classes = {"person"}
        else:
            subject = _sample_np(rng, {"person", "animal", "thing", "food", "vehicle", "place"}, _SUBJ_DETS, adj_p=0.0)
            classes = set(NOUNS[subject.noun].classes)
        adj = _pick(rng, [k for k, a in ADJECTIVES.items() if "*" in a.classes or a.classes & classes])
        return Meaning(pattern, tense, subject, adj=adj)
    if pattern == "locative":
        subject = _sample_np(rng, {"person", "animal", "thing", "food"}, _SUBJ_DETS, adj_p=0.3)
        prep, place = _sample_place(rng)
        return Meaning(pattern, tense, subject, prep=prep, place=place)
    if pattern == "existential":
        subject = _sample_np(rng, {"person", "animal", "thing", "food"}, ("indef", "indef", "num"), adj_p=0.4)
        prep, place = _sample_place(rng)
        return Meaning(pattern, tense, subject, prep=prep, place=place)
    assert pattern == "where", pattern
    subject = _sample_np(rng, {"person", "animal", "thing", "readable"}, ("def", "def", "dem", "poss"), adj_p=0.3)
    return Meaning(pattern, tense, subject)


# --------------------------------------------------------------------------------------- rendering


_FR_VOWELS = set("aeiouyéèêëàâîïôûœ")
_FR_H_MUET = {"homme", "hommes", "heureux", "heureuse", "heureuses", "histoire", "histoires", "horloge", "horloges"}


def _fr_vowel_initial(word: str) -> bool:
    return bool(word) and (word[0] in _FR_VOWELS or word in _FR_H_MUET)


def _join(tokens: list[str], lang: str, end: str) -> str:
    """Tokens -> text, with each language's elision, contraction and end punctuation."""
    tokens = [t for t in tokens if t]
    if lang == "en":
        tokens = [
            "an" if t == "a" and i + 1 < len(tokens) and tokens[i + 1][0] in "aeiou" else t
            for i, t in enumerate(tokens)
        ]
    if lang == "fr":
        out: list[str] = []
        for i, t in enumerate(tokens):  # elision: le arbre -> l'arbre, je ai -> j'ai, que il -> qu'il
            if t in ("le", "la", "je", "de", "ne", "que") and i + 1 < len(tokens) and _fr_vowel_initial(tokens[i + 1]):
                t = t[:-1] + "'"
            out.append(t)
        tokens = out
        out = []
        for t in tokens:  # contraction: de le -> du, de les -> des, à le -> au, à les -> aux
            merged = (
                {("de", "le"): "du", ("de", "les"): "des", ("à", "le"): "au", ("à", "les"): "aux"}.get((out[-1], t))
                if out
                else None
            )
            if merged:
                out[-1] = merged
            else:
                out.append(t)
        tokens = out
    if lang == "es":
        out = []
        for t in tokens:
            if out and out[-1] in ("de", "a") and t == "el":
                out[-1] = "del" if out[-1] == "de" else "al"
            else:
                out.append(t)
        tokens = out
    if lang == "de":
        out = []
        for t in tokens:
            if out and out[-1] == "in" and t == "dem":
                out[-1] = "im"
            else:
                out.append(t)
        tokens = out
    text = ""
    for t in tokens:
        text += t if (not text or text.endswith("'")) else " " + t
    if lang == "fr" and end == "?":
        return text + " ?"
    if lang == "es" and end == "?":
        return "¿" + text + "?"
    return text + end


def _np_en(np: NP) -> list[str]:
    noun = NOUNS[np.noun].forms["en"][2 if np.plural else 1]
    adj = ADJECTIVES[np.adj].forms["en"] if np.adj else ""
    det = {
        "def": "the",
        "indef": "" if np.plural else "a",
        "dem": "these" if np.plural else "this",
        "poss": "my",
        "num": NUMBERS["en"][np.count],
    }[np.det]
    return [det, adj, noun]


def _np_fr(np: NP) -> list[str]:
    gender, sg, pl = NOUNS[np.noun].forms["fr"]
    noun = pl if np.plural else sg
    idx = (2 if np.plural else 0) + (1 if gender == "f" else 0)
    adj = ADJECTIVES[np.adj] if np.adj else None
    pre = post = ""
    if adj is not None:
        form = adj.forms["fr"][idx]
        if adj.fr_pre and idx == 0 and _fr_vowel_initial(noun):
            form = adj.fr_vowel  # vieil arbre, bel oiseau, nouvel ami
        pre, post = (form, "") if adj.fr_pre else ("", form)
    nxt = pre or noun
    f = gender == "f"
    if np.det == "def":
        det = "les" if np.plural else ("la" if f else "le")  # le/la -> l' in _join
    elif np.det == "indef":
        det = ("de" if pre else "des") if np.plural else ("une" if f else "un")
    elif np.det == "dem":
        det = "ces" if np.plural else ("cette" if f else ("cet" if _fr_vowel_initial(nxt) else "ce"))
    elif np.det == "poss":
        det = "mes" if np.plural else ("ma" if f and not _fr_vowel_initial(nxt) else "mon")
    else:
        det = NUMBERS["fr"][np.count]
    return [det, pre, noun, post]


def _np_es(np: NP) -> list[str]:
    gender, sg, pl = NOUNS[np.noun].forms["es"]
    idx = (2 if np.plural else 0) + (1 if gender == "f" else 0)
    adj = ADJECTIVES[np.adj].forms["es"][idx] if np.adj else ""
    dets = {
        "def": ("el", "la", "los", "las"),
        "indef": ("un", "una", "unos", "unas"),
        "dem": ("este", "esta", "estos", "estas"),
        "poss": ("mi", "mi", "mis", "mis"),
    }.get(np.det)
    det = dets[idx] if dets else NUMBERS["es"][np.count]
    return [det, pl if np.plural else sg, adj]


# German determiners by case: columns m, f, n, plural
_DE_DETS = {
    "def": {
        "nom": ("der", "die", "das", "die"),
        "acc": ("den", "die", "das", "die"),
        "dat": ("dem", "der", "dem", "den"),
    },
    "indef": {
        "nom": ("ein", "eine", "ein", ""),
        "acc": ("einen", "eine", "ein", ""),
        "dat": ("einem", "einer", "einem", ""),
    },
    "dem": {
        "nom": ("dieser", "diese", "dieses", "diese"),
        "acc": ("diesen", "diese", "dieses", "diese"),
        "dat": ("diesem", "dieser", "diesem", "diesen"),
    },
    "poss": {
        "nom": ("mein", "meine", "mein", "meine"),
        "acc": ("meinen", "meine", "mein", "meine"),
        "dat": ("meinem", "meiner", "meinem", "meinen"),
    },
}
# Adjective endings by declension: weak (after der/dieser), mixed (after ein/mein), strong (no article).
_DE_ADJ = {
    "weak": {"nom": ("e", "e", "e", "en"), "acc": ("en", "e", "e", "en"), "dat": ("en", "en", "en", "en")},
    "mixed": {"nom": ("er", "e", "es", "en"), "acc": ("en", "e", "es", "en"), "dat": ("en", "en", "en", "en")},
    "strong": {"nom": ("er", "e", "es", "e"), "acc": ("en", "e", "es", "e"), "dat": ("em", "er", "em", "en")},
}


def _np_de(np: NP, case: str) -> list[str]:
    gender, sg, pl = NOUNS[np.noun].forms["de"]
    col = 3 if np.plural else "mfn".index(gender)
    noun = pl if np.plural else sg
    if np.plural and case == "dat" and noun[-1] not in "ns":
        noun += "n"  # dative plural: den bäumen, den kindern
    if np.det == "num" or (np.det == "indef" and np.plural):
        det, decl = (NUMBERS["de"][np.count] if np.det == "num" else ""), "strong"
    else:
        det = _DE_DETS[np.det][case][col]
        decl = "weak" if np.det in ("def", "dem") else ("weak" if np.plural else "mixed")
    adj = ""
    if np.adj:
        adj = ADJECTIVES[np.adj].de_stem + _DE_ADJ[decl][case][col]
    return [det, adj, noun]


def _subject(meaning: Meaning, lang: str, case: str = "nom") -> list[str]:
    s = meaning.subject
    if isinstance(s, Pronoun):
        return [_PRONOUNS[lang][(s.slot, s.gender)]]
    return {"en": _np_en, "fr": _np_fr, "es": _np_es}[lang](s) if lang != "de" else _np_de(s, case)


def _obj(np: NP, lang: str, case: str = "acc") -> list[str]:
    return {"en": _np_en, "fr": _np_fr, "es": _np_es}[lang](np) if lang != "de" else _np_de(np, case)


def _pp(meaning: Meaning, lang: str) -> list[str]:
    if meaning.prep is None:
        return []
    assert meaning.place is not None, f"a preposition needs a place: {meaning}"
    return [*PREPOSITIONS[meaning.prep].forms[lang].split(), *_obj(meaning.place, lang, "dat")]


def _gender_number(meaning: Meaning, lang: str) -> int:
    """Agreement index 0..3 (m sg, f sg, m pl, f pl) of the subject, for predicate adjectives."""
    s = meaning.subject
    if isinstance(s, Pronoun):
        return (2 if s.slot in (P1PL, P3PL) else 0) + (1 if s.gender == "f" else 0)
    return (2 if s.plural else 0) + (1 if NOUNS[s.noun].forms[lang][0] == "f" else 0)


def _verb(m: Meaning) -> Verb:
    assert m.verb is not None, f"pattern {m.pattern!r} needs a verb: {m}"
    return VERBS[m.verb]


def _adj(m: Meaning) -> Adjective:
    assert m.adj is not None, f"pattern {m.pattern!r} needs an adjective: {m}"
    return ADJECTIVES[m.adj]


def _render_en(m: Meaning) -> str:
    slot = _slot(m.subject)
    subj = _subject(m, "en")
    past = m.tense == "past"
    be = _BE[("en", m.tense)].split()[slot]
    if m.pattern in ("transitive", "intransitive", "question"):
        base, third, past_form, particle = _verb(m).en
        do = "did" if past else ("does" if slot == P3SG else "do")
        obj = _obj(m.obj, "en") if m.obj else []
        if m.pattern == "question":
            return _join([do, *subj, base, particle, *obj], "en", "?")
        if m.negated:
            return _join([*subj, do, "not", base, particle, *obj, *_pp(m, "en")], "en", ".")
        verb = past_form if past else (third if slot == P3SG else base)
        return _join([*subj, verb, particle, *obj, *_pp(m, "en")], "en", ".")
    if m.pattern == "adjective":
        return _join([*subj, be, _adj(m).forms["en"]], "en", ".")
    if m.pattern == "locative":
        return _join([*subj, be, *_pp(m, "en")], "en", ".")
    if m.pattern == "existential":
        return _join(["there", be, *subj, *_pp(m, "en")], "en", ".")
    return _join(["where", be, *subj], "en", "?")


def _render_fr(m: Meaning) -> str:
    slot = _slot(m.subject)
    subj = _subject(m, "fr")
    past = m.tense == "past"
    be = _BE[("fr", m.tense)].split()[slot]
    if m.pattern in ("transitive", "intransitive", "question"):
        present, participle = _verb(m).fr
        verb = [_AUX["fr"].split()[slot], participle] if past else [present[slot]]
        if m.negated:  # ne ... pas around the finite verb
            verb = ["ne", verb[0], "pas", *verb[1:]]
        obj = _obj(m.obj, "fr") if m.obj else []
        clause = [*subj, *verb, *obj, *_pp(m, "fr")]
        return _join(["est-ce", "que", *clause], "fr", "?") if m.pattern == "question" else _join(clause, "fr", ".")
    if m.pattern == "adjective":
        return _join([*subj, be, _adj(m).forms["fr"][_gender_number(m, "fr")]], "fr", ".")
    if m.pattern == "locative":
        return _join([*subj, be, *_pp(m, "fr")], "fr", ".")
    if m.pattern == "existential":
        return _join(["il", "y", "avait" if past else "a", *subj, *_pp(m, "fr")], "fr", ".")
    return _join(["où", be, *subj], "fr", "?")


def _render_es(m: Meaning) -> str:
    slot = _slot(m.subject)
    subj = _subject(m, "es")
    past = m.tense == "past"
    estar = _ESTAR[m.tense].split()[slot]
    if m.pattern in ("transitive", "intransitive", "question"):
        present, participle = _verb(m).es
        verb = [_AUX["es"].split()[slot], participle] if past else [present[slot]]
        if m.negated:
            verb = ["no", *verb]
        obj = _obj(m.obj, "es") if m.obj else []
        if m.pattern == "question":  # verb-subject-object: ¿come el perro la manzana?
            return _join([*verb, *subj, *obj], "es", "?")
        return _join([*subj, *verb, *obj, *_pp(m, "es")], "es", ".")
    if m.pattern == "adjective":  # ser for properties
        be = _BE[("es", m.tense)].split()[slot]
        return _join([*subj, be, _adj(m).forms["es"][_gender_number(m, "es")]], "es", ".")
    if m.pattern == "locative":  # estar for location
        return _join([*subj, estar, *_pp(m, "es")], "es", ".")
    if m.pattern == "existential":
        return _join(["había" if past else "hay", *subj, *_pp(m, "es")], "es", ".")
    return _join(["dónde", estar, *subj], "es", "?")


def _render_de(m: Meaning) -> str:
    slot = _slot(m.subject)
    subj = _subject(m, "de")
    past = m.tense == "past"
    be = _BE[("de", m.tense)].split()[slot]
    if m.pattern in ("transitive", "intransitive", "question"):
        present, participle, aux = _verb(m).de
        finite = _AUX["de:" + aux].split()[slot] if past else present[slot]
        final = [participle] if past else []  # the participle closes the clause
        neg = ["nicht"] if m.negated else []
        obj = _obj(m.obj, "de", "acc") if m.obj else []
        if m.pattern == "question":  # verb first: isst der hund den apfel? / hat der hund den apfel gegessen?
            return _join([finite, *subj, *obj, *final], "de", "?")
        return _join([*subj, finite, *obj, *neg, *_pp(m, "de"), *final], "de", ".")
    if m.pattern == "adjective":
        return _join([*subj, be, _adj(m).forms["de"]], "de", ".")
    if m.pattern == "locative":
        return _join([*subj, be, *_pp(m, "de")], "de", ".")
    if m.pattern == "existential":  # verb second after the place: im garten gibt es einen hund.
        return _join([*_pp(m, "de"), "gab" if past else "gibt", "es", *_subject(m, "de", "acc")], "de", ".")
    return _join(["wo", be, *subj], "de", "?")


_RENDERERS = {"en": _render_en, "fr": _render_fr, "es": _render_es, "de": _render_de}


def render(meaning: Meaning, lang: str) -> str:
    """The sentence ``meaning`` in ``lang`` (one of :data:`LANGS`), lowercase with punctuation."""
    if lang not in _RENDERERS:
        raise ValueError(f"unknown language {lang!r}; the grammar speaks {', '.join(LANGS)}")
    return _RENDERERS[lang](meaning)


def render_all(meaning: Meaning) -> dict[str, str]:
    """``{lang: text}`` for every language of the grammar."""
    return {lang: render(meaning, lang) for lang in LANGS}


# --------------------------------------------------------------------------------------- sentences


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One generated sentence: its position in the seeded sequence, its meaning and its four texts."""

    index: int
    meaning: Meaning
    texts: dict

    @property
    def id(self) -> str:
        """Stable id from the position in the sequence: ``s00042``."""
        return f"s{self.index:05d}"


def generate_sentences(n: int, seed: int = 0, *, start: int = 0, max_rejects: int = 10_000) -> list[Sentence]:
    """Sentences ``start .. start+n-1`` of the deduplicated sequence drawn with ``seed``.

    The sequence is fixed by the seed: sentence *i* is the same whatever ``n`` and ``start`` are. No two
    sentences of a sequence share a meaning, nor the text of any language (so "sentence k never seen
    before k" holds per language too, which is what keeps dev/test out of train).
    """
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    rng = random.Random(seed)
    seen_keys: set[str] = set()
    seen_texts: dict[str, set[str]] = {lang: set() for lang in LANGS}
    out: list[Sentence] = []
    index = rejects = 0
    while index < start + n:
        meaning = sample_meaning(rng)
        texts = render_all(meaning)
        key = meaning.key()
        if key in seen_keys or any(texts[lang] in seen_texts[lang] for lang in LANGS):
            rejects += 1
            if rejects > max_rejects:
                raise RuntimeError(
                    f"the grammar ran out of new sentences after {index} (seed {seed}): "
                    f"{max_rejects} draws in a row were duplicates"
                )
            continue
        rejects = 0
        seen_keys.add(key)
        for lang in LANGS:
            seen_texts[lang].add(texts[lang])
        if index >= start:
            out.append(Sentence(index, meaning, texts))
        index += 1
    return out


PAIRS = (("en", "fr"), ("en", "es"), ("en", "de"), ("fr", "en"), ("es", "en"), ("de", "en"))
"""The directed translation pairs of the corpus: English on one side, as in CoVoST 2 / CVSS."""


def generate_pairs(n: int, seed: int = 0, *, start: int = 0, pairs: tuple[tuple[str, str], ...] = PAIRS) -> list[dict]:
    """Text-only translation pairs from sentences ``start .. start+n-1``: one dict per (sentence, pair),
    ``{"id", "src_lang", "src_text", "tgt_lang", "tgt_text"}``. Use ``start`` past the corpus size
    (train + dev + test) for extra MT text that never appears in the spoken corpus."""
    for src, tgt in pairs:
        if src not in LANGS or tgt not in LANGS or src == tgt:
            raise ValueError(f"bad pair {src}->{tgt}; languages: {', '.join(LANGS)}")
    return [
        {
            "id": f"{s.id}-{src}-{tgt}",
            "src_lang": src,
            "src_text": s.texts[src],
            "tgt_lang": tgt,
            "tgt_text": s.texts[tgt],
        }
        for s in generate_sentences(n, seed, start=start)
        for src, tgt in pairs
    ]
